//! Where the data lives: the local data directory and the hot tier's object store.

use std::path::PathBuf;

use anyhow::Context;
use callscope_storage::{Tier, TierConfig};
use clap::Args;

use super::values::parse_key_value;

/// The data directory of `standalone`, `pipeline`, `query-api`, `sql` and `broker`.
pub const DEFAULT_DATA_DIR: &str = "./data";

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Local data directory: the broker's database and, unless --hot-url is set, the tiers.
    #[arg(long, env = "CALLSCOPE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Object-store URL of the hot tier (`file:///…`, `s3://bucket/prefix`, `memory:///`).
    /// Default: `<data-dir>/hot`.
    #[arg(long, env = "CALLSCOPE_HOT_URL")]
    pub hot_url: Option<String>,
    /// Object-store option `key=value` (repeatable), e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`. AWS_* environment variables are read as well.
    #[arg(long = "storage-option", env = "CALLSCOPE_STORAGE_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub storage_options: Vec<(String, String)>,
}

impl StorageArgs {
    /// Opens the hot tier: `--hot-url` with the AWS_* environment and `--storage-option`s,
    /// or `<data-dir>/hot`.
    pub fn hot_tier(&self) -> anyhow::Result<Tier> {
        let mut config = match &self.hot_url {
            Some(url) => TierConfig::new(url.clone()),
            None => {
                let dir = self.data_dir.join("hot");
                TierConfig::local_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?
            }
        };
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_") {
                config.options.insert(k.to_lowercase(), v);
            }
        }
        config.options.extend(self.storage_options.iter().cloned());
        Ok(Tier::open(&config)?)
    }
}
