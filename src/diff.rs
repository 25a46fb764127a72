//! `diff`: semantic comparison of two images (issue 7). Not implemented yet.
