//! What an image check reports: a finding with an id, a severity and the path it is
//! about. A leaf shared by `audit` and the OpenShell contract rules (`contract`), so
//! neither has to import the other.
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub path: String,
    pub message: String,
}
