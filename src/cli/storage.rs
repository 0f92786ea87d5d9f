//! Where the data lives: the local data directory and the four tiers' object stores.

use std::path::PathBuf;

use anyhow::Context;
use callscope_storage::{Tier, TierConfig, TierName, Tiers};
use clap::Args;

use super::values::{parse_key_value, parse_tier_option};

/// The data directory of `standalone`, `pipeline`, `query-api`, `sql` and `broker`.
pub const DEFAULT_DATA_DIR: &str = "./data";

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Local data directory: the broker's database and the tiers whose URL is not set
    /// (`<data-dir>/hot`, `…/warm`, `…/cold`, `…/archive`).
    #[arg(long, env = "CALLSCOPE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Object-store URL of the hot tier (`file:///…`, `s3://bucket/prefix`, `memory:///`).
    /// Default: `<data-dir>/hot`.
    #[arg(long, env = "CALLSCOPE_HOT_URL")]
    pub hot_url: Option<String>,
    /// Object-store URL of the warm tier (compacted files). Default: `<data-dir>/warm`.
    #[arg(long, env = "CALLSCOPE_WARM_URL")]
    pub warm_url: Option<String>,
    /// Object-store URL of the cold tier (downsampled, densely encoded). Default: `<data-dir>/cold`.
    #[arg(long, env = "CALLSCOPE_COLD_URL")]
    pub cold_url: Option<String>,
    /// Object-store URL of the archive tier (plain Hive-partitioned Parquet, maximum
    /// compression). Default: `<data-dir>/archive`.
    #[arg(long, env = "CALLSCOPE_ARCHIVE_URL")]
    pub archive_url: Option<String>,
    /// Object-store option `key=value` (repeatable), e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`. AWS_* environment variables are read as well.
    #[arg(long = "storage-option", env = "CALLSCOPE_STORAGE_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub storage_options: Vec<(String, String)>,
    /// Object-store option of one tier, `tier:key=value` (repeatable), applied after the
    /// shared `--storage-option`s: e.g. `cold:aws_endpoint=https://…` for a cold tier in
    /// another bucket or account.
    #[arg(long = "tier-option", env = "CALLSCOPE_TIER_OPTIONS", value_delimiter = ',', value_parser = parse_tier_option)]
    pub tier_options: Vec<(TierName, String, String)>,
}

impl StorageArgs {
    /// Opens all four tiers. Two tiers must not share one location: each tier's files are
    /// told apart by where they are.
    pub fn tiers(&self) -> anyhow::Result<Tiers> {
        let tiers = Tiers {
            hot: self.tier(TierName::Hot)?,
            warm: self.tier(TierName::Warm)?,
            cold: self.tier(TierName::Cold)?,
            archive: self.tier(TierName::Archive)?,
        };
        for (a, first) in tiers.iter() {
            for (b, second) in tiers.iter().filter(|(b, _)| *b > a) {
                let (x, y) = (first.dir_url(""), second.dir_url(""));
                if x.starts_with(&y) || y.starts_with(&x) {
                    anyhow::bail!(
                        "the {a} tier ({x}) and the {b} tier ({y}) overlap: give each tier a location of its own"
                    );
                }
            }
        }
        Ok(tiers)
    }

    /// Opens one tier: its `--<tier>-url` with the AWS_* environment and `--storage-option`s,
    /// or `<data-dir>/<tier>`.
    pub fn tier(&self, name: TierName) -> anyhow::Result<Tier> {
        let url = match name {
            TierName::Hot => &self.hot_url,
            TierName::Warm => &self.warm_url,
            TierName::Cold => &self.cold_url,
            TierName::Archive => &self.archive_url,
        };
        let mut config = match url {
            Some(url) => TierConfig::new(url.clone()),
            None => {
                let dir = self.data_dir.join(name.as_str());
                TierConfig::local_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?
            }
        };
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_") {
                config.options.insert(k.to_lowercase(), v);
            }
        }
        config.options.extend(self.storage_options.iter().cloned());
        config
            .options
            .extend(self.tier_options.iter().filter(|(t, _, _)| *t == name).map(|(_, k, v)| (k.clone(), v.clone())));
        Tier::open(&config).with_context(|| format!("{name} tier"))
    }
}
