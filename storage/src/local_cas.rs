//! Conditional updates (`PutMode::Update`) for local directories.
//!
//! object_store's `LocalFileSystem` creates objects only-if-absent (`PutMode::Create`) but
//! does not implement `PutMode::Update` (compare the e-tag, then write): it returns
//! `NotImplemented`. Every object that several processes may rewrite (the alerting state,
//! the partition epochs that fence a lost writer) needs that compare-and-swap, so
//! [`LocalCasStore`] adds it in front of a local store: the e-tag check and the write run
//! under an exclusive `flock` of the object's directory, which every process of the host
//! takes for the same check. The write itself is `LocalFileSystem`'s (a temporary file
//! renamed into place), so a new version always gets a new e-tag (inode, time and size).
//!
//! The lock is advisory and per host: processes sharing a local tier must run on one machine
//! (a network file system's `flock` is not to be trusted; use an object store there).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// A local store with `PutMode::Update`.
#[derive(Debug)]
pub struct LocalCasStore {
    inner: Arc<dyn ObjectStore>,
    /// The directory that the store's root path `/` maps to.
    root: PathBuf,
}

impl LocalCasStore {
    /// Wraps a `LocalFileSystem` whose paths are relative to `root`.
    pub fn new(inner: Arc<dyn ObjectStore>, root: impl Into<PathBuf>) -> LocalCasStore {
        LocalCasStore { inner, root: root.into() }
    }

    fn directory_of(&self, location: &Path) -> PathBuf {
        let mut dir = self.root.clone();
        let parts: Vec<_> = location.parts().collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            dir.push(part.as_ref());
        }
        dir
    }

    /// Compares the object's e-tag with `expected` and writes, holding the directory's lock.
    async fn update(
        &self,
        location: &Path,
        payload: PutPayload,
        expected: Option<String>,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let dir = self.directory_of(location);
        let file = dir.join(location.filename().unwrap_or_default());
        let lock_error = |e: std::io::Error| object_store::Error::Generic {
            store: "LocalCasStore",
            source: format!("cannot lock {} for a conditional update: {e}", dir.display()).into(),
        };
        let locked = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Option<std::fs::File>)> {
                let handle = std::fs::File::open(&dir)?;
                handle.lock()?;
                // The replaced version stays open until the new one is in place, so the new
                // one cannot reuse its inode (and, written within the same clock tick at the
                // same size, its e-tag).
                let current = std::fs::File::open(&file).ok();
                Ok((handle, current))
            })
            .await
            .map_err(|e| lock_error(std::io::Error::other(e)))?
            .map_err(lock_error)?
        };
        let current = match self.inner.head(location).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: "the object to update does not exist".into(),
                });
            }
            Err(e) => return Err(e),
        };
        if current.is_none() || current != expected {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: format!("e-tag {current:?} does not match {expected:?}").into(),
            });
        }
        let overwrite = PutOptions { mode: PutMode::Overwrite, ..opts };
        let written = self.inner.put_opts(location, payload, overwrite).await;
        // Closing the directory handle releases the lock.
        drop(locked);
        written
    }
}

impl fmt::Display for LocalCasStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalCas({})", self.inner)
    }
}

// Expanded `#[async_trait]` methods, as in `InstrumentedStore`.
impl ObjectStore for LocalCasStore {
    fn put_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'f, object_store::Result<PutResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            match opts.mode.clone() {
                PutMode::Update(version) => self.update(location, payload, version.e_tag, opts).await,
                _ => self.inner.put_opts(location, payload, opts).await,
            }
        })
    }

    fn put_multipart_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'f, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'f, object_store::Result<GetResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        self.inner.get_opts(location, options)
    }

    fn get_ranges<'a, 'b, 'c, 'f>(
        &'a self,
        location: &'b Path,
        ranges: &'c [Range<u64>],
    ) -> BoxFuture<'f, object_store::Result<Vec<Bytes>>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        self.inner.get_ranges(location, ranges)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    fn list_with_delimiter<'a, 'b, 'f>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'f, object_store::Result<ListResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'a, 'b, 'c, 'f>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> BoxFuture<'f, object_store::Result<()>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        self.inner.copy_opts(from, to, options)
    }

    fn rename_opts<'a, 'b, 'c, 'f>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: RenameOptions,
    ) -> BoxFuture<'f, object_store::Result<()>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        self.inner.rename_opts(from, to, options)
    }
}

#[cfg(test)]
mod tests {
    use object_store::UpdateVersion;
    use object_store::local::LocalFileSystem;

    use super::*;

    fn store(dir: &std::path::Path) -> (LocalCasStore, Path) {
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let base = Path::from_absolute_path(dir).expect("absolute");
        (LocalCasStore::new(inner, "/"), base)
    }

    fn update(e_tag: Option<String>) -> PutOptions {
        PutOptions { mode: PutMode::Update(UpdateVersion { e_tag, version: None }), ..Default::default() }
    }

    #[tokio::test]
    async fn an_update_lands_only_on_the_version_it_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, base) = store(dir.path());
        let key = base.clone().join("state.json");
        let first = store.put(&key, PutPayload::from_static(b"one")).await.expect("put");
        let second = store.put_opts(&key, PutPayload::from_static(b"two"), update(first.e_tag.clone())).await;
        let second = second.expect("the version read is current: the update lands");
        assert_ne!(second.e_tag, first.e_tag, "a new version has a new e-tag");
        let stale = store.put_opts(&key, PutPayload::from_static(b"three"), update(first.e_tag)).await;
        assert!(matches!(stale, Err(object_store::Error::Precondition { .. })), "{stale:?}");
        let read = store.get(&key).await.expect("get").bytes().await.expect("bytes");
        assert_eq!(read.as_ref(), b"two", "the stale update wrote nothing");
        let absent = base.clone().join("absent.json");
        let absent = store.put_opts(&absent, PutPayload::from_static(b"x"), update(second.e_tag)).await;
        assert!(matches!(absent, Err(object_store::Error::Precondition { .. })), "{absent:?}");
    }

    #[tokio::test]
    async fn of_racing_updates_of_one_version_exactly_one_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, base) = store(dir.path());
        let store = Arc::new(store);
        let key = base.clone().join("epoch.json");
        let first = store.put(&key, PutPayload::from_static(b"0")).await.expect("put");
        let racers = (0..16).map(|i| {
            let (store, key, e_tag) = (store.clone(), key.clone(), first.e_tag.clone());
            tokio::spawn(async move {
                store.put_opts(&key, PutPayload::from(format!("{i}").into_bytes()), update(e_tag)).await.is_ok()
            })
        });
        let landed = futures::future::join_all(racers).await.into_iter().filter(|r| *r.as_ref().expect("task")).count();
        assert_eq!(landed, 1, "one update of the version read wins, every other one is refused");
    }
}
