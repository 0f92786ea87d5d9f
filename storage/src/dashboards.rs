//! Stored dashboards: the current definition of each, `_catalog/dashboards/<id>.json`, and
//! every version ever saved, `_catalog/dashboard_versions/<id>/<version>.json`, in the hot
//! tier that every API replica shares. A version object is written create-only before the
//! current one: of two updates from the same version, one wins and the other is told
//! ([`SaveOutcome::Conflict`]), on object stores and local disks alike.

use bytes::Bytes;
use callscope_schemas::dashboards::Dashboard;

use crate::catalog::CatalogDir;
use crate::json_objects::{JsonObjects, stored_id_len};
use crate::tier::Tier;
use crate::{Result, StorageError};

#[derive(Debug, Clone)]
pub struct DashboardStore {
    tier: Tier,
    current: JsonObjects,
}

/// What [`DashboardStore::save`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveOutcome {
    /// Stored as this version.
    Saved(u64),
    /// Another writer stored this version first.
    Conflict(u64),
}

fn version_key(id: &str, version: u64) -> String {
    format!("{}/{id}/{version:010}.json", CatalogDir::DashboardVersions.path())
}

impl DashboardStore {
    pub fn new(tier: Tier) -> DashboardStore {
        DashboardStore { current: JsonObjects::new(tier.clone(), CatalogDir::Dashboards), tier }
    }

    /// The stored dashboards (not the built-ins).
    pub async fn list(&self) -> Result<Vec<Dashboard>> {
        self.current.list().await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Dashboard>> {
        self.current.get(id).await
    }

    /// Stores `dashboard` as version `version` (the caller computed it from the version it
    /// replaces): the version object first, create-only, then the current definition.
    pub async fn save(&self, dashboard: &Dashboard, version: u64) -> Result<SaveOutcome> {
        let mut stored = dashboard.clone();
        stored.builtin = false;
        stored.version = version;
        if stored_id_len(&stored.id) > 200 {
            return Err(StorageError::CorruptRecord {
                path: CatalogDir::Dashboards.path(),
                reason: format!("dashboard id {:?} is too long to store", stored.id),
            });
        }
        let body = serde_json::to_vec_pretty(&stored).map_err(|e| StorageError::CorruptRecord {
            path: version_key(&stored.id, version),
            reason: e.to_string(),
        })?;
        match self.tier.put_durable(&version_key(&stored.id, version), Bytes::from(body), true).await {
            Ok(()) => {}
            Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => {
                return Ok(SaveOutcome::Conflict(version));
            }
            Err(e) => return Err(e),
        }
        self.current.put(&stored.id, &stored).await?;
        Ok(SaveOutcome::Saved(version))
    }

    /// The versions stored of `id`, oldest first.
    pub async fn versions(&self, id: &str) -> Result<Vec<u64>> {
        if stored_id_len(id) > 200 {
            return Ok(Vec::new());
        }
        let prefix = format!("{}/{id}/", CatalogDir::DashboardVersions.path());
        let mut out: Vec<u64> = self
            .tier
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// One stored version of `id`.
    pub async fn version(&self, id: &str, version: u64) -> Result<Option<Dashboard>> {
        if stored_id_len(id) > 200 {
            return Ok(None);
        }
        match self.tier.get(&version_key(id, version)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::CorruptRecord { path: version_key(id, version), reason: e.to_string() }),
            Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the current definition and its versions; returns whether one existed.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let existed = self.current.delete(id).await?;
        for v in self.versions(id).await? {
            self.tier.delete(&version_key(id, v)).await?;
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TierConfig;
    use callscope_schemas::dashboards::builtin::builtin_dashboards;

    #[tokio::test]
    async fn versions_are_kept_and_a_second_writer_of_one_version_loses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier");
        let store = DashboardStore::new(tier);
        let mut d = builtin_dashboards().expect("builtins").remove(0);
        d.id = "mine".into();
        assert_eq!(store.save(&d, 1).await.expect("save"), SaveOutcome::Saved(1));
        d.title = "Second".into();
        assert_eq!(store.save(&d, 2).await.expect("save"), SaveOutcome::Saved(2));
        d.title = "Racing".into();
        assert_eq!(store.save(&d, 2).await.expect("save"), SaveOutcome::Conflict(2));
        let got = store.get("mine").await.expect("get").expect("stored");
        assert_eq!((got.title.as_str(), got.version, got.builtin), ("Second", 2, false));
        assert_eq!(store.versions("mine").await.expect("versions"), [1, 2]);
        assert_eq!(store.version("mine", 1).await.expect("v1").expect("kept").title, "Executive overview");
        let reopened = DashboardStore::new(Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier"));
        assert_eq!(reopened.list().await.expect("list").len(), 1);
        assert!(reopened.delete("mine").await.expect("delete"));
        assert!(reopened.versions("mine").await.expect("versions").is_empty());
        assert!(!reopened.delete("mine").await.expect("delete"));
    }
}
