//! nemoclaw-build: daemonless builder of the hardened NemoClaw sandbox image.
pub mod dpkg;
