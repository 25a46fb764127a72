//! SBOM of the final image (issue 7). Not implemented yet.
