//! `callscope lifecycle`: run the storage lifecycle now (with a progress bar), print its
//! policies; and the schedule that `standalone` and `pipeline` run it on.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use callscope_storage::lifecycle::Lifecycle;
use callscope_storage::lifecycle::jobs::{JobRecord, JobState};
use callscope_storage::lifecycle::policy::Policy;
use callscope_storage::lifecycle::stores::PolicyStore;
use callscope_storage::trace_index::{self, TraceIndex};
use callscope_storage::{FileCatalog, Tiers};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::LifecycleCommand;
use crate::cli::lifecycle::{LifecycleArgs, LifecycleRunConfig};

pub async fn run(command: LifecycleCommand) -> anyhow::Result<()> {
    match command {
        LifecycleCommand::Run(config) => run_now(config).await,
        LifecycleCommand::Policies(config) => {
            let tiers = config.storage.tiers()?;
            let policies = PolicyStore::new(tiers.hot.clone()).list().await?;
            println!("{}", serde_json::to_string_pretty(&policies)?);
            Ok(())
        }
    }
}

async fn run_now(config: LifecycleRunConfig) -> anyhow::Result<()> {
    let tiers = config.storage.tiers()?;
    let store = PolicyStore::new(tiers.hot.clone());
    if let Some(file) = &config.policy_file {
        store_policy_file(&store, file).await?;
    }
    let mut policies = store.list().await?;
    if let Some(id) = &config.policy {
        policies.retain(|p| &p.id == id);
        anyhow::ensure!(!policies.is_empty(), "no policy {id:?} (see `callscope lifecycle policies`)");
    }
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers), format!("cli-{}", std::process::id()));
    let mut failed = 0;
    for policy in &policies {
        let now = callscope_runtime::now_ms();
        let id = Lifecycle::new_job_id(&policy.id, now);
        let mut bar = ProgressBar::new(&policy.id, config.dry_run);
        let record = lifecycle.run(policy, &id, config.dry_run, now, &mut |r| bar.show(r)).await?;
        bar.finish(&record);
        if record.state == JobState::FinishedWithErrors {
            failed += 1;
            for e in &record.errors {
                eprintln!("  error: {e}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} policy run(s) had errors; run again to retry the table-hours that failed");
    Ok(())
}

/// Stores the policies of a JSON file (one policy or an array), each validated.
pub(super) async fn store_policy_file(store: &PolicyStore, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    for (i, item) in items.into_iter().enumerate() {
        let policy: Policy =
            serde_json::from_value(item).with_context(|| format!("{}: policy [{i}]", file.display()))?;
        store.put(&policy).await.with_context(|| format!("{}: policy {:?}", file.display(), policy.id))?;
    }
    Ok(())
}

/// Runs every policy every `interval` until `cancel` (nothing when the interval is zero).
/// A job cut off by `cancel` stops between two object-store calls, which the lifecycle is
/// built to survive: the next run finishes it. Jobs run on a thread and runtime of their
/// own, so a compaction's sorting and encoding take one core at most and never hold up the
/// workers' tasks.
pub(super) async fn spawn_schedule(
    args: &LifecycleArgs,
    tiers: &Tiers,
    runner: String,
    cancel: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let store = PolicyStore::new(tiers.hot.clone());
    if let Some(file) = &args.policy_file {
        store_policy_file(&store, file).await?;
    }
    let interval: Duration = *args.lifecycle_interval;
    if interval.is_zero() {
        return Ok(None);
    }
    let trace_index = TraceIndex::new(tiers.hot.clone());
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), runner.clone());
    let schedule = async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let compaction = trace_index::compact(&trace_index, &runner, callscope_runtime::now_ms());
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = compaction => r,
            };
            match result {
                Ok(r) if r.outcome != "nothing_to_do" || r.files_deleted > 0 => tracing::info!(
                    outcome = r.outcome,
                    generation = r.generation,
                    segments = r.segments_merged,
                    runs = r.runs_written,
                    entries = r.entries_written,
                    deleted = r.files_deleted,
                    "trace-index compaction finished"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "trace-index compaction failed; trying again next time"),
            }
            let policies = match store.list().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the lifecycle policies; trying again next time");
                    continue;
                }
            };
            for policy in policies.into_iter().filter(|p| p.enabled) {
                let now = callscope_runtime::now_ms();
                let id = Lifecycle::new_job_id(&policy.id, now);
                let mut quiet = |_: &JobRecord| {};
                let job = lifecycle.run(&policy, &id, false, now, &mut quiet);
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = job => r,
                };
                match result {
                    Ok(r) if r.units_changed > 0 || !r.errors.is_empty() || r.files_deleted > 0 => tracing::info!(
                        job = %r.id, changed = r.units_changed, held = r.units_held, errors = r.errors.len(),
                        bytes_read = r.bytes_read, bytes_written = r.bytes_written, files_deleted = r.files_deleted,
                        "lifecycle job finished"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(policy = %policy.id, error = %e, "lifecycle job failed"),
                }
            }
        }
    };
    Ok(Some(tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().thread_name("lifecycle").build() {
            Ok(runtime) => runtime.block_on(schedule),
            Err(e) => tracing::error!(error = %e, "cannot start the lifecycle's runtime; the schedule is off"),
        }
    })))
}

/// A one-line progress bar on a terminal, or a line per tenth of the work elsewhere.
struct ProgressBar {
    policy: String,
    dry_run: bool,
    terminal: bool,
    last_tenth: u64,
}

impl ProgressBar {
    fn new(policy: &str, dry_run: bool) -> ProgressBar {
        ProgressBar { policy: policy.to_string(), dry_run, terminal: std::io::stderr().is_terminal(), last_tenth: 0 }
    }

    fn show(&mut self, r: &JobRecord) {
        let width = 30;
        let filled = (r.progress() * width as f64).round() as usize;
        let line = format!(
            "{} [{}{}] {}/{} table-hours  {:<7} changed {}  read {}  wrote {}",
            self.policy,
            "#".repeat(filled),
            "-".repeat(width - filled),
            r.units_done,
            r.units_total,
            r.step,
            r.units_changed,
            bytes(r.bytes_read),
            bytes(r.bytes_written)
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            let tenth = (r.progress() * 10.0) as u64;
            if tenth > self.last_tenth || r.units_done == 0 {
                self.last_tenth = tenth;
                eprintln!("{line}");
            }
        }
    }

    fn finish(&mut self, r: &JobRecord) {
        if self.terminal {
            eprintln!();
        }
        println!(
            "{}policy {}: job {} {:?}: {} of {} table-hours changed, {} held, {} lost to another runner; \
             read {}, wrote {}, {} files replaced, {} files ({}) deleted, {} errors",
            if self.dry_run { "dry run: " } else { "" },
            r.policy,
            r.id,
            r.state,
            r.units_changed,
            r.units_total,
            r.units_held,
            r.units_lost_race,
            bytes(r.bytes_read),
            bytes(r.bytes_written),
            r.files_replaced,
            r.files_deleted,
            bytes(r.bytes_deleted),
            r.errors.len()
        );
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
