//! `callscope grafana`: deploy the dashboards to a Grafana instance, or write them out as
//! Grafana provisioning files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::storage::StorageArgs;

#[derive(Debug, Subcommand)]
pub enum GrafanaCommand {
    /// Create or update the folder, the data sources and every dashboard (built-in and
    /// stored) through Grafana's HTTP API, idempotently, with a line per step.
    Deploy(GrafanaDeployConfig),
    /// Write Grafana provisioning files: `<out>/provisioning/datasources/callscope.yaml`,
    /// `<out>/provisioning/dashboards/callscope.yaml` and `<out>/dashboards/<id>.json`.
    Export(GrafanaExportConfig),
}

#[derive(Debug, Args)]
pub struct GrafanaDeployConfig {
    /// Grafana's base URL.
    #[arg(long)]
    pub url: String,
    /// A Grafana service account token (sent as `Authorization: Bearer …`).
    #[arg(long, env = "CALLSCOPE_GRAFANA_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The folder the dashboards go to (its uid and title).
    #[arg(long, default_value = "callscope")]
    pub folder: String,
    /// The URL at which Grafana reaches callscope's query API (the data sources' URL).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub callscope_url: String,
    /// Where the stored dashboards are (the built-in ones are always deployed).
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct GrafanaExportConfig {
    /// The directory to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// The URL at which Grafana reaches callscope's query API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub callscope_url: String,
    /// Only the built-in dashboards (no data directory read).
    #[arg(long)]
    pub builtin_only: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}
