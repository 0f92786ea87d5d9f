//! The storage lifecycle: its schedule in long-running processes, its policies from a file,
//! and `callscope lifecycle run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::storage::StorageArgs;

/// How often `standalone` and `pipeline` run the lifecycle policies by default.
pub const DEFAULT_LIFECYCLE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    /// Run every lifecycle policy this often (`0s`: never; then run `callscope lifecycle
    /// run` from a scheduler of your own). Several processes may run them: each table-hour
    /// is changed by one of them.
    #[arg(long, env = "CALLSCOPE_LIFECYCLE_INTERVAL", default_value_t = DEFAULT_LIFECYCLE_INTERVAL.into())]
    pub lifecycle_interval: humantime::Duration,
    /// A JSON file of lifecycle policies (one policy or an array) stored at start-up,
    /// replacing stored policies of the same id.
    #[arg(long, env = "CALLSCOPE_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Run the lifecycle policies once, now, with a progress bar.
    Run(LifecycleRunConfig),
    /// Print the policies in force (JSON).
    Policies(LifecyclePoliciesConfig),
}

#[derive(Debug, Args)]
pub struct LifecycleRunConfig {
    /// Run only this policy (default: every policy).
    #[arg(long)]
    pub policy: Option<String>,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// A JSON file of policies to store first (one policy or an array).
    #[arg(long, env = "CALLSCOPE_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LifecyclePoliciesConfig {
    #[command(flatten)]
    pub storage: StorageArgs,
}
