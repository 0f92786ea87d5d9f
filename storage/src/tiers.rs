//! The four storage tiers (hot, warm, cold, archive), each its own object store.
//!
//! Fresh batches land in **hot**; compaction moves them to **warm**; downsampling and
//! colder encodings to **cold**; **archive** keeps plain Hive-partitioned Parquet for years.
//! Which tier holds which file is the file catalog's business ([`crate::file_catalog`]);
//! the catalog itself lives in the hot tier, next to the batch records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tier::{Tier, TierConfig};

/// The name of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Hot,
    Warm,
    Cold,
    Archive,
}

impl TierName {
    pub const ALL: [TierName; 4] = [TierName::Hot, TierName::Warm, TierName::Cold, TierName::Archive];

    pub fn as_str(self) -> &'static str {
        match self {
            TierName::Hot => "hot",
            TierName::Warm => "warm",
            TierName::Cold => "cold",
            TierName::Archive => "archive",
        }
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TierName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TierName::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown tier {s:?} (expected hot, warm, cold or archive)"))
    }
}

/// The four opened tiers.
#[derive(Debug, Clone)]
pub struct Tiers {
    pub hot: Tier,
    pub warm: Tier,
    pub cold: Tier,
    pub archive: Tier,
}

impl Tiers {
    /// The four tiers in sub-directories `hot`, `warm`, `cold` and `archive` of a local
    /// directory (what `standalone` does with `--data-dir`; tests and benchmarks).
    pub fn local(dir: &std::path::Path) -> crate::Result<Tiers> {
        let open = |name: TierName| Tier::open(&TierConfig::local_dir(&dir.join(name.as_str()))?);
        Ok(Tiers {
            hot: open(TierName::Hot)?,
            warm: open(TierName::Warm)?,
            cold: open(TierName::Cold)?,
            archive: open(TierName::Archive)?,
        })
    }

    pub fn get(&self, name: TierName) -> &Tier {
        match name {
            TierName::Hot => &self.hot,
            TierName::Warm => &self.warm,
            TierName::Cold => &self.cold,
            TierName::Archive => &self.archive,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (TierName, &Tier)> {
        TierName::ALL.into_iter().map(move |name| (name, self.get(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in TierName::ALL {
            assert_eq!(t.as_str().parse::<TierName>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).expect("json"), format!("\"{t}\""));
        }
        assert!("lukewarm".parse::<TierName>().expect_err("not a tier").contains("lukewarm"));
    }
}
