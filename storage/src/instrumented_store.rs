//! Metrics on every object-store call: [`InstrumentedStore`] wraps any `ObjectStore` and
//! records, per operation ([`StoreOp`]),
//!
//! * `callscope_store_call_seconds{op}`: a histogram of call durations (its `_count` is the
//!   number of calls);
//! * `callscope_store_errors_total{op,kind}`: calls that failed, by a short error class
//!   ([`error_kind`]: `not_found`, `already_exists`, `precondition`, `not_implemented`,
//!   `other`);
//! * `callscope_store_retries_total{op}`: retries of store calls, counted by whoever retries
//!   ([`StoreMetrics::count_retry`]).
//!
//! The families live in [`StoreMetrics::global`], registered once in the process-wide
//! Prometheus registry. [`crate::Tier::open`] wraps every store it opens, so every process
//! that touches a tier exports them.
//!
//! A call is timed until the store answers: for `get` that is when the body starts (reading
//! the body is the caller's time), for `list` and `delete` (streams) until the stream ends
//! or is dropped, as one observation per call.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// One kind of object-store call, as counted and as matched by fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreOp {
    Put,
    PutMultipart,
    Get,
    Head,
    GetRanges,
    List,
    ListWithDelimiter,
    Delete,
    Copy,
    Rename,
}

impl StoreOp {
    pub const ALL: [StoreOp; 10] = [
        StoreOp::Put,
        StoreOp::PutMultipart,
        StoreOp::Get,
        StoreOp::Head,
        StoreOp::GetRanges,
        StoreOp::List,
        StoreOp::ListWithDelimiter,
        StoreOp::Delete,
        StoreOp::Copy,
        StoreOp::Rename,
    ];

    /// The `op` label value.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Put => "put",
            StoreOp::PutMultipart => "put_multipart",
            StoreOp::Get => "get",
            StoreOp::Head => "head",
            StoreOp::GetRanges => "get_ranges",
            StoreOp::List => "list",
            StoreOp::ListWithDelimiter => "list_with_delimiter",
            StoreOp::Delete => "delete",
            StoreOp::Copy => "copy",
            StoreOp::Rename => "rename",
        }
    }

    pub fn from_name(name: &str) -> Option<StoreOp> {
        StoreOp::ALL.into_iter().find(|op| op.name() == name)
    }

    /// `get_opts` serves both plain reads and `head`.
    pub fn of_get(options: &GetOptions) -> StoreOp {
        if options.head { StoreOp::Head } else { StoreOp::Get }
    }
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `kind` label of a failed call.
pub fn error_kind(error: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => "not_found",
        E::AlreadyExists { .. } => "already_exists",
        E::Precondition { .. } | E::NotModified { .. } => "precondition",
        E::NotImplemented { .. } | E::NotSupported { .. } => "not_implemented",
        _ => "other",
    }
}

/// Buckets of store call durations, 1 ms to 10 s.
const CALL_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The metric families of store calls (cheap to clone: the families are shared).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub call_seconds: HistogramVec,
    pub errors: IntCounterVec,
    pub retries: IntCounterVec,
}

impl StoreMetrics {
    /// The metrics of this process, registered in `prometheus::default_registry()`.
    pub fn global() -> &'static StoreMetrics {
        static METRICS: OnceLock<StoreMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let metrics = StoreMetrics::new(prometheus::default_registry());
            // Zero-valued series from the start, so that "none yet" is visible as 0.
            for op in StoreOp::ALL {
                metrics.call_seconds.with_label_values(&[op.name()]);
                metrics.retries.with_label_values(&[op.name()]);
            }
            metrics
        })
    }

    /// The families registered in `registry` (tests use a registry of their own). A name
    /// already registered there is ignored, as the other crates' metrics do.
    pub fn new(registry: &Registry) -> StoreMetrics {
        let call_seconds = HistogramVec::new(
            HistogramOpts::new("callscope_store_call_seconds", "Duration of object-store calls")
                .buckets(CALL_BUCKETS.to_vec()),
            &["op"],
        )
        .unwrap_or_else(|e| panic!("callscope_store_call_seconds: {e}"));
        let errors = IntCounterVec::new(
            Opts::new("callscope_store_errors_total", "Object-store calls that failed, by error class"),
            &["op", "kind"],
        )
        .unwrap_or_else(|e| panic!("callscope_store_errors_total: {e}"));
        let retries = IntCounterVec::new(
            Opts::new("callscope_store_retries_total", "Object-store calls retried after a transient error"),
            &["op"],
        )
        .unwrap_or_else(|e| panic!("callscope_store_retries_total: {e}"));
        let _ = registry.register(Box::new(call_seconds.clone()));
        let _ = registry.register(Box::new(errors.clone()));
        let _ = registry.register(Box::new(retries.clone()));
        StoreMetrics { call_seconds, errors, retries }
    }

    /// Counts a retry of `op` (for code that retries store calls).
    pub fn count_retry(&self, op: StoreOp) {
        self.retries.with_label_values(&[op.name()]).inc();
    }

    fn count_error(&self, op: StoreOp, error: &object_store::Error) {
        self.errors.with_label_values(&[op.name(), error_kind(error)]).inc();
    }

    fn observe<T>(&self, op: StoreOp, started: Instant, result: &object_store::Result<T>) {
        self.call_seconds.with_label_values(&[op.name()]).observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.count_error(op, e);
        }
    }

    fn timed<T: Send + 'static>(
        &self,
        op: StoreOp,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        TimedStream { inner: stream, op, metrics: self.clone(), started: Instant::now(), done: false }.boxed()
    }
}

/// A stream of results timed from its creation to its end (or drop), errors counted.
struct TimedStream<T> {
    inner: BoxStream<'static, object_store::Result<T>>,
    op: StoreOp,
    metrics: StoreMetrics,
    started: Instant,
    done: bool,
}

impl<T> TimedStream<T> {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.metrics
                .call_seconds
                .with_label_values(&[self.op.name()])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl<T> Stream for TimedStream<T> {
    type Item = object_store::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) => this.metrics.count_error(this.op, e),
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }
}

impl<T> Drop for TimedStream<T> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// An `ObjectStore` that records [`StoreMetrics`] for every call of the store it wraps.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    metrics: StoreMetrics,
}

impl InstrumentedStore {
    /// Wraps `inner`, recording into the process's [`StoreMetrics::global`].
    pub fn new(inner: Arc<dyn ObjectStore>) -> InstrumentedStore {
        InstrumentedStore::with_metrics(inner, StoreMetrics::global().clone())
    }

    pub fn with_metrics(inner: Arc<dyn ObjectStore>, metrics: StoreMetrics) -> InstrumentedStore {
        InstrumentedStore { inner, metrics }
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

// `ObjectStore` is declared with `#[async_trait]`; its async methods are implemented here in
// their expanded form (a boxed future with the trait's lifetimes), so that the crate needs no
// `async-trait` dependency of its own.
impl ObjectStore for InstrumentedStore {
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
            let started = Instant::now();
            let result = self.inner.put_opts(location, payload, opts).await;
            self.metrics.observe(StoreOp::Put, started, &result);
            result
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
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.put_multipart_opts(location, opts).await;
            self.metrics.observe(StoreOp::PutMultipart, started, &result);
            result
        })
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
        Box::pin(async move {
            let op = StoreOp::of_get(&options);
            let started = Instant::now();
            let result = self.inner.get_opts(location, options).await;
            self.metrics.observe(op, started, &result);
            result
        })
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
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.get_ranges(location, ranges).await;
            self.metrics.observe(StoreOp::GetRanges, started, &result);
            result
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.metrics.timed(StoreOp::Delete, self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.metrics.timed(StoreOp::List, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.metrics.timed(StoreOp::List, self.inner.list_with_offset(prefix, offset))
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
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.list_with_delimiter(prefix).await;
            self.metrics.observe(StoreOp::ListWithDelimiter, started, &result);
            result
        })
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
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.copy_opts(from, to, options).await;
            self.metrics.observe(StoreOp::Copy, started, &result);
            result
        })
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
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.rename_opts(from, to, options).await;
            self.metrics.observe(StoreOp::Rename, started, &result);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    fn calls(metrics: &StoreMetrics, op: StoreOp) -> u64 {
        metrics.call_seconds.with_label_values(&[op.name()]).get_sample_count()
    }

    fn errors(metrics: &StoreMetrics, op: StoreOp, kind: &str) -> u64 {
        metrics.errors.with_label_values(&[op.name(), kind]).get()
    }

    #[tokio::test]
    async fn every_call_and_error_is_counted() {
        let registry = Registry::new();
        let metrics = StoreMetrics::new(&registry);
        let store = InstrumentedStore::with_metrics(Arc::new(InMemory::new()), metrics.clone());
        let a = Path::from("m/a");
        store.put(&a, PutPayload::from_static(b"x")).await.expect("put");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        store.put_opts(&a, PutPayload::from_static(b"y"), create).await.expect_err("exists");
        assert_eq!(store.get(&a).await.expect("get").bytes().await.expect("body").as_ref(), b"x");
        store.head(&Path::from("m/none")).await.expect_err("missing");
        store.copy(&a, &Path::from("m/b")).await.expect("copy");
        let listed: Vec<_> = store.list(Some(&Path::from("m"))).try_collect().await.expect("list");
        assert_eq!(listed.len(), 2);
        store.delete(&a).await.expect("delete");

        assert_eq!(calls(&metrics, StoreOp::Put), 2);
        assert_eq!(errors(&metrics, StoreOp::Put, "already_exists"), 1);
        assert_eq!(calls(&metrics, StoreOp::Get), 1);
        assert_eq!(calls(&metrics, StoreOp::Head), 1);
        assert_eq!(errors(&metrics, StoreOp::Head, "not_found"), 1);
        assert_eq!(calls(&metrics, StoreOp::Copy), 1);
        assert_eq!(calls(&metrics, StoreOp::List), 1);
        assert_eq!(calls(&metrics, StoreOp::Delete), 1);
        assert_eq!(errors(&metrics, StoreOp::Get, "not_found"), 0);

        // The families are exported under their names.
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"callscope_store_call_seconds".to_string()), "{names:?}");
        assert!(names.contains(&"callscope_store_errors_total".to_string()), "{names:?}");
    }

    #[test]
    fn error_kinds_and_op_names() {
        let not_found = object_store::Error::NotFound { path: "p".into(), source: "gone".into() };
        assert_eq!(error_kind(&not_found), "not_found");
        let generic = object_store::Error::Generic { store: "s", source: "boom".into() };
        assert_eq!(error_kind(&generic), "other");
        for op in StoreOp::ALL {
            assert_eq!(StoreOp::from_name(op.name()), Some(op));
        }
        assert_eq!(StoreOp::from_name("pot"), None);
    }
}
