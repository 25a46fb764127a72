//! nemoclaw-build: daemonless builder of the hardened NemoClaw sandbox image.
//!
//! Data flows one way: [`source`] (read the base) -> [`tarread`] (each layer's tar
//! entries, exactly as other readers see them) -> [`rootfs`] (layers with
//! whiteouts applied, never extracted) -> [`steps`] (purge, accounts, files,
//! artifacts, init) -> [`layer`] (deterministic tar, [`compress`], digests) ->
//! [`sink`] (OCI layout / archive). `audit` and `policy` read images through the
//! same source and rootfs model.
//!
//! Modules form layers, each using only its own and lower ones: leaves (formats,
//! names, parsed inputs: [`oci`], [`record`], [`platform`], [`elf`]), image access
//! and transports ([`image`], [`source`], [`registry`]), the rootfs model and the
//! work on it, then the build's phases and the commands. `tests/layering.rs`
//! holds the order and fails on a cycle.
pub mod account_fields;
pub mod assemble;
pub mod attest;
pub mod audit;
pub mod build_cache;
pub mod build_model;
pub mod cache;
pub mod checks;
pub mod compress;
pub mod contract;
pub mod diff;
pub mod digest;
pub mod dpkg;
pub mod elf;
pub mod fanout;
#[cfg(test)]
mod fanout_tests;
pub mod finding;
pub mod fspath;
#[cfg(test)]
mod golden_tests;
pub mod hostfs;
pub mod image;
pub mod imageref;
pub mod index;
pub mod layer;
pub mod layer_index;
#[cfg(test)]
mod multiarch_tests;
pub mod oci;
pub mod oci_layout;
#[cfg(test)]
mod output_tests;
pub mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod platform;
pub mod progress;
pub mod recipe;
pub mod record;
pub mod registry;
pub mod remote_cache;
pub mod rootfs;
pub mod sbom;
pub mod scan;
pub mod scratch;
pub mod sink;
pub mod source;
pub mod spill;
pub mod steps;
#[cfg(test)]
mod tar_tests;
pub mod targets;
pub mod tarread;
/// Fixture builders (tar layers, OCI layouts) for this crate's tests and, with the
/// `testing` feature, for integration tests and other crates' tests.
#[cfg(any(test, feature = "testing"))]
pub mod testutil;
pub mod transfer;
#[cfg(any(test, feature = "testing"))]
pub use testutil as testing;
pub mod verify;
