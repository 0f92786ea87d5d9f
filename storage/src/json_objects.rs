//! A directory of JSON objects in a tier, one object per id (`<dir>/<id>.json`): the
//! catalog's small shared records (custom metrics, silences, acknowledgements) that every
//! process reads and any API replica may change.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::catalog::CatalogDir;
use crate::tier::Tier;
use crate::{Result, StorageError};

/// Longest id an object may have, counted as it is stored (bytes other than letters,
/// digits, `-`, `_` and `.` are percent-encoded, three characters each): object names stay
/// under the 255-byte file-name limit of local disks. A longer id cannot exist: reads and
/// deletes answer "absent", writes refuse.
pub const MAX_STORED_ID_LEN: usize = 200;

/// The length of `id` as stored.
pub fn stored_id_len(id: &str) -> usize {
    id.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { 1 } else { 3 }).sum()
}

#[derive(Debug, Clone)]
pub struct JsonObjects {
    tier: Tier,
    dir: CatalogDir,
}

impl JsonObjects {
    pub fn new(tier: Tier, dir: CatalogDir) -> JsonObjects {
        JsonObjects { tier, dir }
    }

    fn key(&self, id: &str) -> String {
        self.dir.json_object(id)
    }

    /// Every readable object; unreadable ones are skipped with a warning.
    pub async fn list<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for path in self.tier.list(&self.dir.path()).await? {
            if !path.ends_with(".json") {
                continue;
            }
            let bytes = match self.tier.get(&path).await {
                Ok(b) => b,
                // Deleted between listing and reading.
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice::<T>(&bytes) {
                Ok(item) => out.push(item),
                Err(e) => tracing::warn!(path = %path, error = %e, "ignoring an unreadable catalog object"),
            }
        }
        Ok(out)
    }

    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        if stored_id_len(id) > MAX_STORED_ID_LEN {
            return Ok(None);
        }
        match self.tier.get(&self.key(id)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::CorruptRecord { path: self.key(id), reason: e.to_string() }),
            Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn put<T: Serialize>(&self, id: &str, item: &T) -> Result<()> {
        if stored_id_len(id) > MAX_STORED_ID_LEN {
            return Err(StorageError::CorruptRecord {
                path: self.dir.path(),
                reason: format!("id of {} characters as stored, more than {MAX_STORED_ID_LEN}", stored_id_len(id)),
            });
        }
        let body = serde_json::to_vec_pretty(item)
            .map_err(|e| StorageError::CorruptRecord { path: self.key(id), reason: e.to_string() })?;
        self.tier.put_durable(&self.key(id), Bytes::from(body), false).await
    }

    /// Deletes an object; returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        if stored_id_len(id) > MAX_STORED_ID_LEN || !self.tier.exists(&self.key(id)).await? {
            return Ok(false);
        }
        self.tier.delete(&self.key(id)).await?;
        Ok(true)
    }
}
