//! Stored custom metric definitions: one JSON object per metric,
//! `_catalog/custom_metrics/<name>.json`, in the hot tier that every process shares, so
//! definitions survive restarts and reach every worker and API replica.

use callscope_schemas::custom_metrics::{CustomMetric, builtin_definitions};

use crate::Result;
use crate::catalog::CatalogDir;
use crate::json_objects::JsonObjects;
use crate::tier::Tier;

/// Definitions stored in a tier.
#[derive(Debug, Clone)]
pub struct CustomMetricStore {
    objects: JsonObjects,
}

impl CustomMetricStore {
    pub fn new(tier: Tier) -> CustomMetricStore {
        CustomMetricStore { objects: JsonObjects::new(tier, CatalogDir::CustomMetrics) }
    }

    /// Stored definitions (not the built-ins), by name.
    pub async fn stored(&self) -> Result<Vec<CustomMetric>> {
        let mut out: Vec<CustomMetric> = self.objects.list().await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Built-ins overridden by stored definitions of the same name, by name.
    pub async fn effective(&self) -> Result<Vec<CustomMetric>> {
        Ok(merge_with_builtins(self.stored().await?))
    }

    pub async fn put(&self, def: &CustomMetric) -> Result<()> {
        let mut stored = def.clone();
        stored.builtin = false;
        self.objects.put(&def.name, &stored).await
    }

    /// Deletes a stored definition; returns whether one existed.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        self.objects.delete(name).await
    }
}

/// The built-in definitions with stored ones replacing or adding to them.
pub fn merge_with_builtins(stored: Vec<CustomMetric>) -> Vec<CustomMetric> {
    let mut all: std::collections::BTreeMap<String, CustomMetric> =
        builtin_definitions().into_iter().map(|d| (d.name.clone(), d)).collect();
    for def in stored {
        all.insert(def.name.clone(), def);
    }
    all.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TierConfig;

    #[tokio::test]
    async fn stored_definitions_override_builtins_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open =
            || CustomMetricStore::new(Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier"));
        let store = open();
        let builtins = builtin_definitions().len();
        assert_eq!(store.effective().await.expect("list").len(), builtins);
        let mut def = builtin_definitions().remove(0);
        def.help = "changed".into();
        store.put(&def).await.expect("put");
        let mut extra = def.clone();
        extra.name = "zz_custom".into();
        store.put(&extra).await.expect("put");
        let reopened = open().effective().await.expect("list");
        assert_eq!(reopened.len(), builtins + 1);
        let changed = reopened.iter().find(|d| d.name == def.name).expect("present");
        assert_eq!((changed.help.as_str(), changed.builtin), ("changed", false));
        assert!(open().delete("zz_custom").await.expect("delete"));
        assert!(!open().delete("zz_custom").await.expect("delete"));
    }
}
