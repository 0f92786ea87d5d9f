//! A storage tier: one object_store URL, opened once and shared.
//!
//! Every tier's store is wrapped in an [`InstrumentedStore`] (metrics on every call) and,
//! when the `fault_spec` option is set or a test asks for it, a [`FaultStore`] beneath that
//! (so injected faults show in the metrics as the callers see them).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use url::Url;

use crate::fault_store::{FaultControl, FaultStore, parse_fault_spec};
use crate::instrumented_store::InstrumentedStore;
use crate::local_cas::LocalCasStore;
use crate::{Result, StorageError};

/// The tier option holding fault rules (see [`crate::fault_store::spec`]); taken out of the
/// options before they reach object_store.
pub const FAULT_SPEC_OPTION: &str = "fault_spec";

/// How to open a tier: its URL plus options for remote stores
/// (for S3: `aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`, `aws_region`,
/// `aws_allow_http`, … as accepted by object_store's `AmazonS3Builder`), and
/// [`FAULT_SPEC_OPTION`] for soak runs.
#[derive(Debug, Clone)]
pub struct TierConfig {
    pub url: String,
    pub options: BTreeMap<String, String>,
}

impl TierConfig {
    pub fn new(url: impl Into<String>) -> Self {
        TierConfig { url: url.into(), options: BTreeMap::new() }
    }

    /// A tier in a local directory (created if missing).
    pub fn local_dir(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let abs = std::fs::canonicalize(dir)?;
        let url = Url::from_directory_path(&abs).map_err(|_| StorageError::InvalidUrl {
            url: abs.display().to_string(),
            reason: "not an absolute directory path".into(),
        })?;
        Ok(TierConfig::new(url.to_string()))
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the tier.
    pub key: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// An opened tier. Object keys are relative to the tier's base path.
#[derive(Debug, Clone)]
pub struct Tier {
    store: Arc<dyn ObjectStore>,
    /// Scheme and authority only (`file:///`, `s3://bucket/`, `memory:///`): where the
    /// store is registered for DataFusion.
    store_url: Url,
    /// Path inside the store that holds this tier.
    base: Path,
    /// Local directory for `file://` tiers (files are fsynced before they count as durable).
    local_root: Option<std::path::PathBuf>,
}

impl Tier {
    pub fn open(config: &TierConfig) -> Result<Tier> {
        Tier::open_inner(config, None)
    }

    /// Opens a tier with a fault injector in front of its store, holding the rules of the
    /// `fault_spec` option if any, plus whatever the returned control adds (tests).
    pub fn open_with_faults(config: &TierConfig) -> Result<(Tier, FaultControl)> {
        let control = FaultControl::new();
        Ok((Tier::open_inner(config, Some(control.clone()))?, control))
    }

    fn open_inner(config: &TierConfig, faults: Option<FaultControl>) -> Result<Tier> {
        let invalid = |reason: String| StorageError::InvalidUrl { url: config.url.clone(), reason };
        let mut url = Url::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let local_root = if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|_| invalid("not a local path".into()))?;
            std::fs::create_dir_all(&dir)?;
            Some(dir)
        } else {
            None
        };
        let mut options = config.options.clone();
        let faults = match options.remove(FAULT_SPEC_OPTION) {
            Some(spec) => {
                let rules = parse_fault_spec(&spec)?;
                tracing::warn!(url = %config.url, spec = %spec, "fault injection is active on this tier");
                let control = faults.unwrap_or_default();
                for rule in rules {
                    control.add(rule);
                }
                Some(control)
            }
            None => faults,
        };
        let (store, base) = object_store::parse_url_opts(&url, options).map_err(|e| invalid(e.to_string()))?;
        let mut store: Arc<dyn ObjectStore> = Arc::from(store);
        if local_root.is_some() {
            // `parse_url_opts` roots a local store at `/`, the tier's directory being `base`.
            store = Arc::new(LocalCasStore::new(store, "/"));
        }
        if let Some(control) = faults {
            store = Arc::new(FaultStore::with_control(store, control).with_base(&base));
        }
        let mut store_url = url.clone();
        store_url.set_path("/");
        store_url.set_query(None);
        Ok(Tier { store: Arc::new(InstrumentedStore::new(store)), store_url, base, local_root })
    }

    /// A tier over a given store (tests, benchmarks), with metrics on its calls.
    pub fn from_store(store: Arc<dyn ObjectStore>, store_url: Url) -> Tier {
        Tier { store: Arc::new(InstrumentedStore::new(store)), store_url, base: Path::default(), local_root: None }
    }

    /// A tier over a given store with a fault injector in front of it (tests).
    pub fn from_store_with_faults(store: Arc<dyn ObjectStore>, store_url: Url) -> (Tier, FaultControl) {
        let faults = FaultStore::new(store);
        let control = faults.control().clone();
        (Tier::from_store(Arc::new(faults), store_url), control)
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// Full URL of a directory under this tier, ending in `/` (for DataFusion tables).
    pub fn dir_url(&self, relative: &str) -> String {
        let mut s = self.store_url.to_string();
        for part in self.base.parts() {
            s.push_str(part.as_ref());
            s.push('/');
        }
        let relative = relative.trim_matches('/');
        if !relative.is_empty() {
            s.push_str(relative);
            s.push('/');
        }
        s
    }

    /// The object path of a key relative to the tier.
    pub fn path(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self.base.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(relative.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    /// The key relative to the tier of an object path inside it.
    pub fn relative(&self, path: &Path) -> String {
        let base: Vec<_> = self.base.parts().collect();
        path.parts().skip(base.len()).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/")
    }

    /// Writes objects (overwriting) concurrently, each atomically and durably; returns once
    /// all are durable, or the first error.
    pub async fn put_all_durable(&self, files: Vec<(String, Bytes)>) -> Result<()> {
        let writes = files.into_iter().map(|(path, bytes)| async move { self.put_durable(&path, bytes, false).await });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// Writes an object atomically and makes it durable before returning.
    pub async fn put_durable(&self, relative: &str, bytes: Bytes, create_only: bool) -> Result<()> {
        let path = self.path(relative);
        let mode = if create_only { PutMode::Create } else { PutMode::Overwrite };
        self.store.put_opts(&path, PutPayload::from_bytes(bytes), PutOptions { mode, ..Default::default() }).await?;
        self.sync(&path).await
    }

    /// Read-check-write of one object that several processes may write: `decide` sees the
    /// object's current bytes (`None`: absent) and returns what to write, or `None` to leave
    /// it. The write is conditional on the object being unchanged since the read
    /// (`PutMode::Update` with the e-tag/version read, `PutMode::Create` when absent), so a
    /// concurrent writer makes it return `Ok(false)`, as does `decide` declining; `Ok(true)`
    /// once the write is durable. Local tiers get `PutMode::Update` from
    /// [`LocalCasStore`]; a store without it (S3 with `aws_conditional_put=disabled`) fails
    /// with `NotImplemented` rather than writing unchecked.
    pub async fn put_if_match(
        &self,
        relative: &str,
        decide: impl FnOnce(Option<&[u8]>) -> Option<Bytes>,
    ) -> Result<bool> {
        let current = self.get_versioned(relative).await?;
        let Some(bytes) = decide(current.as_ref().map(|(b, _)| b.as_ref())) else { return Ok(false) };
        Ok(self.put_versioned(relative, bytes, current.as_ref().map(|(_, v)| v)).await?.is_some())
    }

    /// An object's bytes and version (for [`Tier::put_versioned`]); `None` when absent.
    pub async fn get_versioned(&self, relative: &str) -> Result<Option<(Bytes, UpdateVersion)>> {
        match self.store.get(&self.path(relative)).await {
            Ok(got) => {
                let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
                Ok(Some((got.bytes().await?, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes an object only if it is still at `expected` (absent when `None`): returns the
    /// new version once the write is durable, or `None` when another write came first.
    pub async fn put_versioned(
        &self,
        relative: &str,
        bytes: Bytes,
        expected: Option<&UpdateVersion>,
    ) -> Result<Option<UpdateVersion>> {
        use object_store::Error as E;
        let path = self.path(relative);
        let mode = expected.cloned().map_or(PutMode::Create, PutMode::Update);
        let written = match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes), PutOptions { mode, ..Default::default() })
            .await
        {
            Ok(written) => written,
            Err(E::Precondition { .. } | E::AlreadyExists { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.sync(&path).await?;
        Ok(Some(UpdateVersion { e_tag: written.e_tag, version: written.version }))
    }

    /// Renames an object (atomically on local disks; copy and delete on S3) and makes the
    /// new name durable before returning.
    pub async fn rename_durable(&self, from: &str, to: &str) -> Result<()> {
        let to = self.path(to);
        self.store.rename(&self.path(from), &to).await?;
        self.sync(&to).await
    }

    /// Makes an object written by other means (a multipart upload) durable: fsyncs it on a
    /// local tier; remote stores need nothing.
    pub async fn make_durable(&self, relative: &str) -> Result<()> {
        self.sync(&self.path(relative)).await
    }

    /// fsyncs a local file and its directory; a no-op for remote stores, whose PUT is
    /// durable when it returns.
    async fn sync(&self, path: &Path) -> Result<()> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let mut file = root.clone();
        for part in path.parts().skip(self.base.parts().count()) {
            file.push(part.as_ref());
        }
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Creates a directory under a local tier (so that listing an empty dataset works
    /// everywhere); remote stores have no directories and need nothing.
    pub fn ensure_dir(&self, relative: &str) -> Result<()> {
        if let Some(root) = &self.local_root {
            std::fs::create_dir_all(root.join(relative))?;
        }
        Ok(())
    }

    pub async fn get(&self, relative: &str) -> Result<Bytes> {
        Ok(self.store.get(&self.path(relative)).await?.bytes().await?)
    }

    pub async fn exists(&self, relative: &str) -> Result<bool> {
        match self.store.head(&self.path(relative)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, relative: &str) -> Result<()> {
        match self.store.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists keys (relative to the tier) under a prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let prefix_path = self.path(prefix);
        let metas: Vec<_> = self.store.list(Some(&prefix_path)).try_collect().await?;
        let mut keys: Vec<String> = metas.iter().map(|m| self.relative(&m.location)).collect();
        keys.sort();
        Ok(keys)
    }

    /// Lists objects under a prefix with their size and modification time, sorted by key.
    pub async fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let prefix_path = self.path(prefix);
        let metas: Vec<_> = self.store.list(Some(&prefix_path)).try_collect().await?;
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.relative(&m.location),
                size: m.size,
                modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// The immediate sub-directories of a prefix (keys relative to the tier, without a
    /// trailing `/`), sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let listing = self.store.list_with_delimiter(Some(&self.path(prefix))).await?;
        let mut dirs: Vec<String> = listing.common_prefixes.iter().map(|p| self.relative(p)).collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Checks that the store answers (used by health endpoints).
    pub async fn probe(&self) -> Result<()> {
        use futures::StreamExt;
        let prefix = self.path(crate::catalog::CATALOG_ROOT);
        let mut listing = self.store.list(Some(&prefix));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_tier_round_trip_and_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TierConfig::local_dir(&dir.path().join("hot")).expect("config");
        let tier = Tier::open(&config).expect("open");
        tier.put_durable("metrics/date=2026-01-01/hour=05/a.parquet", Bytes::from_static(b"x"), true)
            .await
            .expect("put");
        assert!(dir.path().join("hot/metrics/date=2026-01-01/hour=05/a.parquet").exists());
        let err = tier
            .put_durable("metrics/date=2026-01-01/hour=05/a.parquet", Bytes::from_static(b"y"), true)
            .await
            .expect_err("create-only must refuse to overwrite");
        assert!(matches!(err, StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })));
        assert_eq!(
            tier.list("metrics").await.expect("list"),
            vec!["metrics/date=2026-01-01/hour=05/a.parquet".to_string()]
        );
        assert!(tier.dir_url("metrics").starts_with("file:///"));
        assert!(tier.dir_url("metrics").ends_with("/hot/metrics/"));
        tier.delete("metrics/date=2026-01-01/hour=05/a.parquet").await.expect("delete");
        tier.delete("metrics/none").await.expect("deleting a missing object is fine");
        assert!(!tier.exists("metrics/date=2026-01-01/hour=05/a.parquet").await.expect("head"));
    }

    #[tokio::test]
    async fn every_opened_tier_records_store_metrics() {
        let metrics = crate::StoreMetrics::global();
        let puts = || metrics.call_seconds.with_label_values(&["put"]).get_sample_count();
        let missing = || metrics.errors.with_label_values(&["head", "not_found"]).get();
        let (puts_before, missing_before) = (puts(), missing());
        let tier = Tier::open(&TierConfig::new("memory:///")).expect("open");
        tier.put_durable("m/a", Bytes::from_static(b"x"), false).await.expect("put");
        assert!(!tier.exists("m/none").await.expect("head"));
        // Other tests share the process-wide registry, so only growth is certain.
        assert!(puts() > puts_before);
        assert!(missing() > missing_before);
        let exported = prometheus::default_registry().gather();
        assert!(exported.iter().any(|f| f.name() == "callscope_store_call_seconds"));
    }

    /// The building block of crash and zombie tests: a writer stopped after its batch
    /// record, before its data files are published.
    #[tokio::test]
    async fn commit_batch_can_be_paused_between_its_record_and_the_publication_of_its_files() {
        use crate::commit_log::{BatchRecord, CommitLog};
        use crate::fault_store::PathMatch;
        use crate::instrumented_store::StoreOp;

        let dir = tempfile::tempdir().expect("tempdir");
        let (tier, faults) = Tier::open_with_faults(&TierConfig::local_dir(dir.path()).expect("config")).expect("open");
        let pause = faults.pause(Some(StoreOp::Rename), PathMatch::prefix("metrics/"));
        let record = BatchRecord {
            topic: "callscope.metrics".into(),
            partition: 0,
            first_offset: 0,
            last_offset: 9,
            files: vec!["metrics/a.parquet".into()],
            rows: 10,
            dead_letters: 0,
            writer: "w1".into(),
            created_at_ms: 0,
            pending: String::new(),
        };
        let record_key =
            crate::catalog::CatalogKey::BatchRecord { topic: record.topic.clone(), partition: 0, first_offset: 0 }
                .path();
        let log = CommitLog::new(tier.clone());
        let writer = tokio::spawn(async move {
            log.commit_batch(&record, vec![("metrics/a.parquet".into(), Bytes::from_static(b"PAR1"))]).await
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), pause.wait_until_paused())
            .await
            .expect("the writer reaches the publication of its data file");
        assert!(tier.exists(&record_key).await.expect("head"), "the batch record is written");
        assert!(!tier.exists("metrics/a.parquet").await.expect("head"), "the data file is not published");
        assert!(!writer.is_finished());

        pause.release();
        tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("released")
            .expect("join")
            .expect("commit");
        assert!(tier.exists("metrics/a.parquet").await.expect("head"));
    }

    #[test]
    fn invalid_urls_are_reported() {
        assert!(Tier::open(&TierConfig::new("not a url")).is_err());
        assert!(Tier::open(&TierConfig::new("ftp://x/y")).is_err());
    }
}
