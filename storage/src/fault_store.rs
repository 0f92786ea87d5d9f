//! Fault injection as a test tool: [`FaultStore`] wraps an `ObjectStore` and, per
//! [`FaultRule`], fails, delays or pauses the calls that match an operation and a key.
//!
//! Rules are added and removed at run time through a [`FaultControl`] (tests get one from
//! [`crate::Tier::open_with_faults`] or [`crate::Tier::from_store_with_faults`]), and each
//! reports how often it fired ([`RuleHandle::fired`]). A [`Fault::Pause`] stops a caller at
//! one step until the test releases it ([`Pause::wait_until_paused`], [`Pause::release`]),
//! so a test can run something else between two store calls of a writer. Nothing is random
//! unless a rule has a rate, and a rate draws from a seeded xorshift generator.
//!
//! Keys are matched relative to the tier (the store's base path is stripped first), against
//! the written object for `copy` and `rename` and the listed prefix for `list`.
//!
//! For soak runs the same rules have a text form, the `fault_spec` tier option
//! ([`spec`], e.g. `put:_catalog/commits/:error:0.05;get:*:latency:20ms`), which
//! [`crate::Tier::open`] applies when present.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, ready};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use tokio::sync::watch;

use crate::instrumented_store::StoreOp;

pub mod spec;
#[cfg(test)]
mod tests;

pub use spec::{FaultSpecError, parse_fault_spec};

/// Which keys (relative to the tier) a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    Contains(String),
    Prefix(String),
}

impl PathMatch {
    pub fn contains(text: impl Into<String>) -> PathMatch {
        PathMatch::Contains(text.into())
    }

    pub fn prefix(text: impl Into<String>) -> PathMatch {
        PathMatch::Prefix(text.into())
    }

    pub fn matches(&self, key: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Contains(text) => key.contains(text.as_str()),
            PathMatch::Prefix(text) => key.starts_with(text.as_str()),
        }
    }
}

/// The error a rule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedError {
    /// `object_store::Error::Generic`, which callers treat as transient.
    Transient,
    NotImplemented,
    Precondition,
    /// `object_store::Error::NotFound`: a read that misses an object that exists (as a
    /// check made just before another process created it would).
    NotFound,
}

impl InjectedError {
    fn to_error(self, op: StoreOp, key: &str) -> object_store::Error {
        let what = format!("injected fault on {op} {key}");
        match self {
            InjectedError::Transient => object_store::Error::Generic { store: "FaultStore", source: what.into() },
            InjectedError::NotImplemented => {
                object_store::Error::NotImplemented { operation: what, implementer: "FaultStore".into() }
            }
            InjectedError::Precondition => {
                object_store::Error::Precondition { path: key.to_string(), source: what.into() }
            }
            InjectedError::NotFound => object_store::Error::NotFound { path: key.to_string(), source: what.into() },
        }
    }
}

/// What a rule does to a matching call.
#[derive(Debug, Clone)]
pub enum Fault {
    Error(InjectedError),
    Latency(Duration),
    Pause(Pause),
}

/// When a rule acts: before the call reaches the store, or after the store did it (the
/// effect happened, the caller sees the fault, like a reply lost after a PUT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Before,
    After,
}

/// One fault rule: which calls (operation, key), what to do, how often.
#[derive(Debug, Clone)]
pub struct FaultRule {
    op: Option<StoreOp>,
    path: PathMatch,
    fault: Fault,
    skip: u64,
    times: Option<u64>,
    rate: Option<(f64, u64)>,
    stage: Stage,
}

/// Seed of a rate given without one.
const DEFAULT_SEED: u64 = 0x5EED;

impl FaultRule {
    /// A rule on `op` (every operation if `None`) that fires on every matching call.
    pub fn new(op: Option<StoreOp>, path: PathMatch, fault: Fault) -> FaultRule {
        FaultRule { op, path, fault, skip: 0, times: None, rate: None, stage: Stage::Before }
    }

    pub fn once(self) -> FaultRule {
        self.times(1)
    }

    /// Fires at most `n` times.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    /// Lets the first `n` matching calls through (`skip(1).once()`: only the second call).
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Fires on a fraction `rate` (0 to 1) of the matching calls, drawn from `seed`.
    pub fn rate(mut self, rate: f64, seed: u64) -> FaultRule {
        self.rate = Some((rate.clamp(0.0, 1.0), seed));
        self
    }

    pub fn stage(mut self, stage: Stage) -> FaultRule {
        self.stage = stage;
        self
    }

    /// Acts after the store did the call (see [`Stage::After`]).
    pub fn after_call(self) -> FaultRule {
        self.stage(Stage::After)
    }
}

/// A rule added to a [`FaultControl`]; counts its firings, even after removal.
#[derive(Debug, Clone)]
pub struct RuleHandle {
    id: u64,
    fired: Arc<AtomicU64>,
}

impl RuleHandle {
    /// How many calls this rule has acted on.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }
}

/// A point where matching calls wait until the test releases them. A released pause lets
/// every later call through; add a new one to stop again.
#[derive(Debug, Clone)]
pub struct Pause {
    state: Arc<PauseState>,
}

#[derive(Debug)]
struct PauseState {
    /// Calls that reached the pause.
    arrived: watch::Sender<u64>,
    released: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Pause {
        Pause::new()
    }
}

impl Pause {
    pub fn new() -> Pause {
        Pause { state: Arc::new(PauseState { arrived: watch::Sender::new(0), released: watch::Sender::new(false) }) }
    }

    /// Returns once a call has reached the pause (wrap it in a timeout in tests).
    pub async fn wait_until_paused(&self) {
        let mut arrived = self.state.arrived.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = arrived.wait_for(|n| *n > 0).await;
    }

    /// How many calls have reached the pause so far (waiting or released).
    pub fn arrived(&self) -> u64 {
        *self.state.arrived.borrow()
    }

    /// Lets the waiting calls, and any later ones, continue.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    pub fn is_released(&self) -> bool {
        *self.state.released.borrow()
    }

    async fn block(&self) {
        let mut released = self.state.released.subscribe();
        self.state.arrived.send_modify(|n| *n += 1);
        let _ = released.wait_for(|r| *r).await;
    }
}

#[derive(Debug)]
struct ActiveRule {
    id: u64,
    rule: FaultRule,
    matched: u64,
    fired: Arc<AtomicU64>,
    rng: u64,
}

#[derive(Debug, Default)]
struct RuleSet {
    next_id: u64,
    rules: Vec<ActiveRule>,
}

/// Adds and removes the rules of one or more [`FaultStore`]s (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct FaultControl {
    rules: Arc<Mutex<RuleSet>>,
}

impl FaultControl {
    pub fn new() -> FaultControl {
        FaultControl::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RuleSet> {
        // Rules stay consistent even if a holder panicked: every update is a single step.
        self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add(&self, rule: FaultRule) -> RuleHandle {
        let mut set = self.lock();
        set.next_id += 1;
        let id = set.next_id;
        let fired = Arc::new(AtomicU64::new(0));
        let rng = splitmix(rule.rate.map_or(DEFAULT_SEED, |(_, seed)| seed));
        set.rules.push(ActiveRule { id, rule, matched: 0, fired: fired.clone(), rng });
        RuleHandle { id, fired }
    }

    /// Removes a rule; returns whether it was still there.
    pub fn remove(&self, handle: &RuleHandle) -> bool {
        let mut set = self.lock();
        let before = set.rules.len();
        set.rules.retain(|r| r.id != handle.id);
        set.rules.len() != before
    }

    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Pauses the first call of `op` (every operation if `None`) on a matching key.
    pub fn pause(&self, op: Option<StoreOp>, path: PathMatch) -> Pause {
        let pause = Pause::new();
        self.add(FaultRule::new(op, path, Fault::Pause(pause.clone())).once());
        pause
    }

    /// The faults for one call, in rule order, up to the first error.
    fn plan(&self, op: StoreOp, key: &str, stage: Stage) -> Vec<Fault> {
        let mut set = self.lock();
        let mut faults = Vec::new();
        for active in set.rules.iter_mut() {
            let rule = &active.rule;
            if rule.stage != stage || rule.op.is_some_and(|o| o != op) || !rule.path.matches(key) {
                continue;
            }
            active.matched += 1;
            if active.matched <= rule.skip || rule.times.is_some_and(|t| active.fired.load(Ordering::SeqCst) >= t) {
                continue;
            }
            if let Some((rate, _)) = rule.rate
                && unit_interval(&mut active.rng) >= rate
            {
                continue;
            }
            active.fired.fetch_add(1, Ordering::SeqCst);
            faults.push(rule.fault.clone());
            if matches!(rule.fault, Fault::Error(_)) {
                break;
            }
        }
        faults
    }

    /// Applies the faults of one call: waits out latencies and pauses, returns an error.
    async fn inject(&self, op: StoreOp, key: &str, stage: Stage) -> object_store::Result<()> {
        for fault in self.plan(op, key, stage) {
            match fault {
                Fault::Latency(delay) => tokio::time::sleep(delay).await,
                Fault::Pause(pause) => pause.block().await,
                Fault::Error(error) => return Err(error.to_error(op, key)),
            }
        }
        Ok(())
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// xorshift64: a uniform draw in [0, 1).
fn unit_interval(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A rule set and the base path it strips from keys; shared with the streams it makes.
#[derive(Debug, Clone)]
struct Injector {
    control: FaultControl,
    base: String,
}

impl Injector {
    fn key(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.base.is_empty() {
            return full.to_string();
        }
        match full.strip_prefix(self.base.as_str()).map(|rest| (rest, rest.strip_prefix('/'))) {
            Some(("", _)) => String::new(),
            Some((_, Some(relative))) => relative.to_string(),
            _ => full.to_string(),
        }
    }

    async fn inject(&self, op: StoreOp, path: &Path, stage: Stage) -> object_store::Result<()> {
        self.control.inject(op, &self.key(path), stage).await
    }

    /// A stream guarded by the rules of `op` on `path`: before it starts and after it ends.
    fn stream<T: Send + 'static>(
        &self,
        op: StoreOp,
        path: Path,
        make: impl FnOnce() -> BoxStream<'static, object_store::Result<T>> + Send + 'static,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let (before, after) = (self.clone(), self.clone());
        let after_path = path.clone();
        let body = stream::once(async move {
            match before.inject(op, &path, Stage::Before).await {
                Ok(()) => make(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            }
        })
        .flatten();
        let tail = stream::once(async move { after.inject(op, &after_path, Stage::After).await })
            .filter_map(|result| ready(result.err().map(Err)));
        body.chain(tail).boxed()
    }
}

/// An `ObjectStore` that applies the rules of a [`FaultControl`] to the calls of the store
/// it wraps.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    injector: Injector,
}

impl FaultStore {
    /// Wraps `inner` with an empty rule set (see [`FaultStore::control`]).
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultStore {
        FaultStore::with_control(inner, FaultControl::new())
    }

    pub fn with_control(inner: Arc<dyn ObjectStore>, control: FaultControl) -> FaultStore {
        FaultStore { inner, injector: Injector { control, base: String::new() } }
    }

    /// Matches keys relative to `base` (a tier's path inside the store).
    pub fn with_base(mut self, base: &Path) -> FaultStore {
        self.injector.base = base.as_ref().to_string();
        self
    }

    pub fn control(&self) -> &FaultControl {
        &self.injector.control
    }

    /// Runs `call` between the before and after rules of `op` on `path` (it is not even
    /// created when a rule before it fails).
    async fn guarded<T, F: Future<Output = object_store::Result<T>>>(
        &self,
        op: StoreOp,
        path: &Path,
        call: impl FnOnce() -> F,
    ) -> object_store::Result<T> {
        self.injector.inject(op, path, Stage::Before).await?;
        let value = call().await?;
        self.injector.inject(op, path, Stage::After).await?;
        Ok(value)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

// Expanded `#[async_trait]` signatures, as in `instrumented_store`.
impl ObjectStore for FaultStore {
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
        Box::pin(self.guarded(StoreOp::Put, location, || self.inner.put_opts(location, payload, opts)))
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
        Box::pin(self.guarded(StoreOp::PutMultipart, location, || self.inner.put_multipart_opts(location, opts)))
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
        let op = StoreOp::of_get(&options);
        Box::pin(self.guarded(op, location, || self.inner.get_opts(location, options)))
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
        Box::pin(self.guarded(StoreOp::GetRanges, location, || self.inner.get_ranges(location, ranges)))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (before, after) = (self.injector.clone(), self.injector.clone());
        // An injected error goes through the inner store as an error item, in place.
        let locations = locations
            .then(move |location| {
                let injector = before.clone();
                async move {
                    let location = location?;
                    injector.inject(StoreOp::Delete, &location, Stage::Before).await?;
                    Ok::<Path, object_store::Error>(location)
                }
            })
            .boxed();
        self.inner
            .delete_stream(locations)
            .then(move |deleted| {
                let injector = after.clone();
                async move {
                    let location = deleted?;
                    injector.inject(StoreOp::Delete, &location, Stage::After).await?;
                    Ok::<Path, object_store::Error>(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        let key = prefix.clone().unwrap_or_default();
        self.injector.stream(StoreOp::List, key, move || inner.list(prefix.as_ref()))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let (prefix, offset) = (prefix.cloned(), offset.clone());
        let key = prefix.clone().unwrap_or_default();
        self.injector.stream(StoreOp::List, key, move || inner.list_with_offset(prefix.as_ref(), &offset))
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
            let key = prefix.cloned().unwrap_or_default();
            self.guarded(StoreOp::ListWithDelimiter, &key, || self.inner.list_with_delimiter(prefix)).await
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
        Box::pin(self.guarded(StoreOp::Copy, to, || self.inner.copy_opts(from, to, options)))
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
        Box::pin(self.guarded(StoreOp::Rename, to, || self.inner.rename_opts(from, to, options)))
    }
}
