//! `verify`: rebuild from a build record and compare digests (issue 7). Not implemented yet.
