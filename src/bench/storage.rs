//! `callscope bench storage`: bytes per sample in every tier.
//!
//! **The generator** (deterministic for a seed): `--series` series sampled every
//! `--interval` for `--hours`, the way a phone platform's exporters report them — a
//! quarter each of
//!
//! * counters (`calls_total`, `bytes_sent_total`): integers growing by a Poisson-like
//!   step per sample;
//! * integer gauges (`queue_length`, `active_calls`): a bounded random walk;
//! * latencies in ms with two decimals (`asr_latency_ms`): a random walk around 120 ms;
//! * ratios with four decimals (`ai_confidence`): a random walk in [0, 1].
//!
//! Each series has a service and two labels (region, pod). Samples arrive time-major (all
//! series at t, then t + interval), in batches of 50 000 rows per hot file — what the
//! workers write at their default flush size — and are written by the workers' encoder.
//! The lifecycle then compacts (warm), encodes densely (cold) and archives them, and the
//! bench prints the bytes per sample in each tier, next to the same samples written by a
//! plain float Parquet writer (arrow-rs defaults, sorted like warm) and, when `promtool` is
//! on the PATH, a Prometheus TSDB block made by `promtool tsdb create-blocks-from
//! openmetrics` from the same samples. Beside the samples it writes their roll-ups as the
//! workers do (1 minute and 1 hour, a file per flush), downsamples them and drops their
//! sparse names as the built-in policy does (keeping the source hours, to measure them in
//! every tier; every generated series is sampled every `--interval`, so at 15 s every name
//! is sparse at 1 minute), and prints in each tier the bytes of each resolution over the
//! bytes of the samples, and what the built-in policy keeps once it deletes the
//! downsampled source.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::rollup::{Partial, RollupRow, SeriesKey, resolution_label, rollups_to_record_batch};
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use callscope_storage::layout::{HourPartition, RollupFileKey, RollupSource, rollup_resolution_ms};
use callscope_storage::lifecycle::Lifecycle;
use callscope_storage::lifecycle::policy::{Policy, PolicyStep};
use callscope_storage::{DataTable, FileCatalog, TierName, Tiers};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::{scratch_dir, write_hot_file};
use crate::cli::BenchStorageConfig;

/// 2026-01-01T00:00:00Z: the samples' first instant (old enough for every step).
const START_MS: i64 = 1_767_225_600_000;
const FLUSH_ROWS: usize = 50_000;

struct Series {
    name: &'static str,
    kind: MetricKind,
    service: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn round_to(v: f64, digits: i32) -> f64 {
    // Through text, as an exporter's value reaches us.
    format!("{v:.*}", digits as usize).parse().unwrap_or(v)
}

impl Series {
    fn next(&mut self, rng: &mut StdRng) -> f64 {
        self.value = match self.name {
            "calls_total" | "bytes_sent_total" => self.value + f64::from(rng.random_range(0..6u32)),
            "queue_length" | "active_calls" => (self.value + f64::from(rng.random_range(-2..=2i32))).clamp(0.0, 500.0),
            "asr_latency_ms" => round_to((self.value + rng.random_range(-3.0..3.0)).clamp(20.0, 2000.0), 2),
            _ => round_to((self.value + rng.random_range(-0.01..0.01)).clamp(0.0, 1.0), 4),
        };
        self.value
    }
}

fn generate_series(count: usize, rng: &mut StdRng) -> Vec<Series> {
    const KINDS: [(&str, MetricKind, f64); 8] = [
        ("calls_total", MetricKind::Counter, 0.0),
        ("bytes_sent_total", MetricKind::Counter, 1e6),
        ("queue_length", MetricKind::Gauge, 10.0),
        ("active_calls", MetricKind::Gauge, 100.0),
        ("asr_latency_ms", MetricKind::Histogram, 120.0),
        ("asr_latency_ms", MetricKind::Histogram, 120.0),
        ("ai_confidence", MetricKind::Gauge, 0.8),
        ("ai_confidence", MetricKind::Gauge, 0.8),
    ];
    (0..count)
        .map(|i| {
            let (name, kind, start) = KINDS[i % KINDS.len()];
            let service = ["call-gateway", "asr", "ai-engine", "billing"][i / KINDS.len() % 4].to_string();
            let labels = BTreeMap::from([
                ("region".to_string(), ["cn-east", "cn-north", "cn-south"][i % 3].to_string()),
                ("pod".to_string(), format!("{service}-{}", i / 32)),
            ]);
            let value = if start > 1.0 { start + f64::from(rng.random_range(0..100u32)) } else { start };
            Series { name, kind, service, labels, value }
        })
        .collect()
}

fn bytes_per_sample(bytes: u64, samples: usize) -> f64 {
    bytes as f64 / samples.max(1) as f64
}

pub async fn run(config: BenchStorageConfig) -> anyhow::Result<()> {
    let dir = scratch_dir("storage")?;
    let tiers = Tiers::local(&dir)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut series = generate_series(config.series, &mut rng);
    let interval_ms = config.interval.as_millis() as i64;
    let steps = (i64::from(config.hours) * 3_600_000 / interval_ms.max(1)) as usize;
    let samples = steps * series.len();
    println!(
        "bench storage: {} series x {} samples (one every {}, {} h) = {samples} samples; scratch {}",
        series.len(),
        steps,
        humantime::format_duration(config.interval),
        config.hours,
        dir.display()
    );

    // Hot: what the workers' encoder writes, a file per flush and hour.
    let started = Instant::now();
    let mut openmetrics: BTreeMap<usize, Vec<(i64, f64)>> = BTreeMap::new();
    let mut pending: BTreeMap<HourPartition, Vec<SourcedEvent>> = BTreeMap::new();
    let mut offset = 0i64;
    let mut hot_files = 0;
    // The roll-ups the workers would write beside the samples (1 minute and 1 hour, their
    // default): the windows a flush's samples closed, in a file of that flush.
    let mut rollup_files = RollupFiles::new(&series);
    for step in 0..steps {
        let t = START_MS + step as i64 * interval_ms;
        for (i, s) in series.iter_mut().enumerate() {
            let value = s.next(&mut rng);
            openmetrics.entry(i).or_default().push((t, value));
            rollup_files.add(i, s.kind, value, t);
            let event = Event::Metric(Metric {
                name: s.name.to_string(),
                kind: s.kind,
                value,
                timestamp_ms: t,
                service: s.service.clone(),
                labels: s.labels.clone(),
                unit: None,
            });
            let hour = HourPartition::of_unix_ms(t);
            let batch = pending.entry(hour).or_default();
            batch.push(SourcedEvent { partition: 0, offset, event });
            offset += 1;
            if batch.len() >= FLUSH_ROWS {
                let events = std::mem::take(batch);
                write_hot_file(&tiers, Dataset::Metrics, hour, &events).await?;
                hot_files += 1;
                rollup_files.write_closed(&tiers, t).await?;
            }
        }
    }
    for (hour, events) in std::mem::take(&mut pending) {
        if !events.is_empty() {
            write_hot_file(&tiers, Dataset::Metrics, hour, &events).await?;
            hot_files += 1;
        }
    }
    rollup_files.write_closed(&tiers, i64::MAX).await?;
    let catalog = FileCatalog::new(tiers.clone());
    let usage = |tier: TierName| {
        let catalog = catalog.clone();
        async move {
            let all = callscope_storage::usage::collect(&catalog).await?;
            let in_tier = |table: &'static str| {
                all.iter()
                    .filter(move |u| u.tier == tier.as_str() && u.table == table)
                    .fold((0u64, 0u64, 0u64), |(f, r, b), u| (f + u.files, r + u.rows, b + u.bytes))
            };
            let (files, rows, bytes) = in_tier("metrics");
            anyhow::Ok((files, rows, bytes, rollup_bytes(&catalog, tier).await?))
        }
    };
    let (files, rows, hot_bytes, hot_rollups) = usage(TierName::Hot).await?;
    anyhow::ensure!(rows as usize == samples, "hot holds {rows} rows, generated {samples}");
    println!("generated and wrote {hot_files} hot files in {:.1} s", started.elapsed().as_secs_f64());

    let mut table = vec![("hot (as the workers write)".to_string(), files, hot_bytes, hot_rollups)];
    // The downsampled hours in cold before the cold step packs them a day per file.
    let mut coarse_hourly = BTreeMap::new();
    let lifecycle = Lifecycle::new(catalog.clone(), "bench");
    let far_future = START_MS + 400 * 86_400_000;
    for (step, tier) in [
        (PolicyStep::Compact { after: "1h".into() }, TierName::Warm),
        (PolicyStep::Cold { after: "1h".into() }, TierName::Cold),
        (PolicyStep::Archive { after: "1h".into() }, TierName::Archive),
    ] {
        let policy = Policy {
            id: format!("bench-{}", step.name()),
            description: String::new(),
            tables: vec![DataTable::Events(Dataset::Metrics).name().to_string(), DataTable::Rollups.name().to_string()],
            steps: vec![step],
            enabled: true,
        };
        let started = Instant::now();
        let id = Lifecycle::new_job_id(&policy.id, far_future);
        let job = lifecycle.run(&policy, &id, false, far_future, &mut |_| {}).await?;
        anyhow::ensure!(job.errors.is_empty(), "{}: {:?}", policy.id, job.errors);
        let seconds = started.elapsed().as_secs_f64();
        let (files, rows, bytes, rollups) = usage(tier).await?;
        anyhow::ensure!(rows as usize == samples, "{tier} holds {rows} rows, expected {samples}");
        table.push((format!("{tier} ({}, {seconds:.1} s)", policy.id), files, bytes, rollups));
        if tier == TierName::Warm {
            if config.queries {
                super::query_speed::compare(&tiers, &dir, config.query_runs).await?;
            }
            downsample(&lifecycle, far_future).await?;
            coarse_hourly = rollup_bytes(&catalog, TierName::Cold).await?;
            let (files, _, bytes, rollups) = usage(tier).await?;
            table.push(("warm, sparse names dropped".to_string(), files, bytes, rollups));
        }
    }

    // A plain float Parquet writer (arrow-rs defaults) over the same rows, sorted like warm.
    let plain_bytes = plain_parquet(&tiers, &catalog).await?;
    table.push(("plain float Parquet (arrow-rs defaults)".to_string(), 1, plain_bytes, BTreeMap::new()));
    let prometheus = prometheus_block(&dir, &series, &openmetrics);

    println!();
    // The roll-ups of the same samples in each tier, per resolution, over the samples' bytes.
    let resolutions: std::collections::BTreeSet<i64> = table.iter().flat_map(|t| t.3.keys().copied()).collect();
    print!("{:<46} {:>6} {:>14} {:>13}", "where", "files", "bytes", "bytes/sample");
    for r in &resolutions {
        print!(" {:>10}", format!("{}/raw", resolution_label(*r)));
    }
    println!();
    for (name, files, bytes, rollups) in &table {
        print!("{name:<46} {files:>6} {bytes:>14} {:>13.3}", bytes_per_sample(*bytes, samples));
        for r in &resolutions {
            let ratio = rollups.get(r).map_or(String::new(), |b| format!("{:.3}", *b as f64 / (*bytes).max(1) as f64));
            print!(" {ratio:>10}");
        }
        println!();
    }
    kept_rollups_line(&table);
    coarse_hourly_line(&table, &coarse_hourly);
    first_days_line(&table, &coarse_hourly);
    match prometheus {
        Ok(bytes) => println!(
            "{:<46} {:>6} {bytes:>14} {:>13.3}",
            "Prometheus TSDB block (promtool)",
            "-",
            bytes_per_sample(bytes, samples)
        ),
        Err(why) => println!("{:<46} skipped: {why}", "Prometheus TSDB block (promtool)"),
    }
    println!("\n(scratch data left in {} for inspection)", dir.display());
    Ok(())
}

/// The resolutions the workers write by default.
const WORKER_RESOLUTIONS: [i64; 2] = [60_000, 3_600_000];

/// Writes roll-ups as the workers do: with each flush, the windows its samples closed,
/// one file per resolution and hour they fall in.
struct RollupFiles {
    keys: Vec<std::sync::Arc<SeriesKey>>,
    /// Per resolution of [`WORKER_RESOLUTIONS`]: the open windows by (start, series).
    open: Vec<BTreeMap<(i64, usize), Partial>>,
    written: i64,
}

impl RollupFiles {
    fn new(series: &[Series]) -> RollupFiles {
        let keys = series
            .iter()
            .map(|s| {
                std::sync::Arc::new(SeriesKey {
                    name: s.name.to_string(),
                    service: s.service.clone(),
                    labels: s.labels.clone(),
                    kind: s.kind,
                    unit: None,
                })
            })
            .collect();
        RollupFiles { keys, open: vec![BTreeMap::new(); WORKER_RESOLUTIONS.len()], written: 0 }
    }

    /// Adds a sample of series `i` to its window at every resolution.
    fn add(&mut self, i: usize, kind: MetricKind, value: f64, t: i64) {
        for (r, open) in WORKER_RESOLUTIONS.iter().zip(&mut self.open) {
            open.entry((t.div_euclid(*r) * r, i)).or_insert_with(|| Partial::empty(kind)).add(value, t);
        }
    }

    /// Writes and removes the windows that end at or before `now_ms`.
    async fn write_closed(&mut self, tiers: &Tiers, now_ms: i64) -> anyhow::Result<()> {
        for (&resolution, open) in WORKER_RESOLUTIONS.iter().zip(&mut self.open) {
            let still_open = open.split_off(&(now_ms.saturating_sub(resolution).saturating_add(1), 0));
            let closed = std::mem::replace(open, still_open);
            let mut by_hour: BTreeMap<HourPartition, Vec<RollupRow>> = BTreeMap::new();
            for ((window, i), partial) in closed {
                by_hour.entry(HourPartition::of_unix_ms(window)).or_default().push(RollupRow {
                    resolution_ms: resolution,
                    window_start_ms: window,
                    series: self.keys[i].clone(),
                    partial,
                    partition: 0,
                    late: false,
                });
            }
            for (hour, rows) in by_hour {
                let key = RollupFileKey {
                    resolution_ms: resolution,
                    hour,
                    topic: "callscope.metrics".into(),
                    partition: 0,
                    source: RollupSource::Batch { first_offset: self.written, last_offset: self.written },
                };
                self.written += 1;
                let batch = rollups_to_record_batch(&rows)?;
                tiers.hot.put_durable(&key.path(), callscope_storage::parquet_file::encode(&[batch])?, false).await?;
            }
        }
        Ok(())
    }
}

/// The bytes of the roll-ups visible in `tier`, by resolution (ms), each file once.
async fn rollup_bytes(catalog: &FileCatalog, tier: TierName) -> anyhow::Result<BTreeMap<i64, u64>> {
    let mut out = BTreeMap::new();
    // A day file shared by the hours of a day counts once.
    let mut seen = std::collections::BTreeSet::new();
    for unit in catalog.snapshot(DataTable::Rollups, None).await? {
        let Some(resolution) = rollup_resolution_ms(&unit.unit) else { continue };
        let files = unit.files().into_iter().filter(|f| f.tier == tier && seen.insert(f.key.clone()));
        let bytes: u64 = files.map(|f| f.size).sum();
        if bytes > 0 {
            *out.entry(resolution).or_default() += bytes;
        }
    }
    Ok(out)
}

/// The downsampled roll-ups in cold before the cold step packed them (an hour per file),
/// over the samples in cold.
fn coarse_hourly_line(table: &[(String, u64, u64, BTreeMap<i64, u64>)], coarse_hourly: &BTreeMap<i64, u64>) {
    let Some((_, _, cold_bytes, packed)) = table.iter().find(|t| t.0.starts_with("cold")) else { return };
    let labels: Vec<String> = coarse_hourly.keys().map(|r| resolution_label(*r)).collect();
    let ratio = |m: &BTreeMap<i64, u64>| m.values().sum::<u64>() as f64 / (*cold_bytes).max(1) as f64;
    let packed: BTreeMap<i64, u64> =
        packed.iter().filter(|(r, _)| coarse_hourly.contains_key(r)).map(|(r, b)| (*r, *b)).collect();
    println!(
        "downsampled roll-ups in cold ({}): {:.3} of the samples' bytes an hour per file, {:.3} a day per file",
        labels.join(" + "),
        ratio(coarse_hourly),
        ratio(&packed)
    );
}

/// Downsamples every roll-up hour as the built-in policy does, and drops its sparse names
/// as it does, but keeps the source hours (their bytes are measured in every tier too).
async fn downsample(lifecycle: &Lifecycle, now_ms: i64) -> anyhow::Result<()> {
    let Some(PolicyStep::Downsample { from, to, drop_sparse_below, .. }) =
        Policy::default_policy().steps.into_iter().find(|s| matches!(s, PolicyStep::Downsample { .. }))
    else {
        return Ok(());
    };
    let step = PolicyStep::Downsample { after: "1h".into(), from, to, delete_source_after: None, drop_sparse_below };
    let policy = Policy {
        id: "bench-downsample".into(),
        description: String::new(),
        tables: vec![DataTable::Rollups.name().to_string()],
        steps: vec![step],
        enabled: true,
    };
    let started = Instant::now();
    let job = lifecycle.run(&policy, &Lifecycle::new_job_id(&policy.id, now_ms), false, now_ms, &mut |_| {}).await?;
    anyhow::ensure!(job.errors.is_empty(), "{}: {:?}", policy.id, job.errors);
    println!(
        "downsampled roll-up hours and dropped their sparse names ({} changes) in {:.1} s",
        job.units_changed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The roll-ups the built-in policy keeps once it deletes the downsampled source, over
/// the samples, in cold and archive.
fn kept_rollups_line(table: &[(String, u64, u64, BTreeMap<i64, u64>)]) {
    let Ok(Some(d)) = Policy::default_policy().downsampling() else { return };
    let (Some((_, kept_for)), from) = (d.delete_source_after, d.from) else { return };
    for (name, _, bytes, rollups) in table.iter().filter(|t| t.0.starts_with("cold") || t.0.starts_with("archive")) {
        let kept: u64 = rollups.iter().filter(|(r, _)| **r != from).map(|(_, b)| *b).sum();
        let labels: Vec<String> = rollups.keys().filter(|r| **r != from).map(|r| resolution_label(*r)).collect();
        let tier = name.split(' ').next().unwrap_or_default();
        println!(
            "roll-ups the default policy keeps in {tier} ({}; {} deleted after {kept_for}): {:.3} of the samples' bytes",
            labels.join(" + "),
            resolution_label(from),
            kept as f64 / (*bytes).max(1) as f64
        );
    }
}

/// Every visible metrics row, sorted by series and time, written once with arrow-rs's
/// default writer properties; returns the file's size.
async fn plain_parquet(tiers: &Tiers, catalog: &FileCatalog) -> anyhow::Result<u64> {
    use datafusion::prelude::{SessionContext, col};
    let ctx = SessionContext::new();
    callscope_storage::file_catalog::table::register_tier_stores(ctx.runtime_env().as_ref(), tiers);
    let table = DataTable::Events(Dataset::Metrics);
    ctx.register_table(
        "metrics",
        std::sync::Arc::new(callscope_storage::file_catalog::table::CatalogTable::new(catalog.clone(), table)),
    )?;
    let schema = table.file_schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let sort = table.sort_columns().iter().map(|c| col(*c).sort(true, false)).collect();
    let batches = ctx.table("metrics").await?.select_columns(&columns)?.sort(sort)?.collect().await?;
    let mut buffer = Vec::new();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buffer, schema, None)?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(buffer.len() as u64)
}

/// Writes the samples as OpenMetrics text, has promtool build TSDB blocks from it, and
/// returns the blocks' size; `Err` says why it could not (promtool missing).
fn prometheus_block(
    dir: &std::path::Path,
    series: &[Series],
    samples: &BTreeMap<usize, Vec<(i64, f64)>>,
) -> anyhow::Result<u64, String> {
    let promtool = std::process::Command::new("promtool").arg("--version").output();
    if !promtool.is_ok_and(|o| o.status.success()) {
        return Err("promtool is not on the PATH (Debian: apt-get install prometheus)".into());
    }
    let text = dir.join("samples.om");
    let write = || -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&text)?);
        let mut by_family: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in series.iter().enumerate() {
            by_family.entry(s.name).or_default().push(i);
        }
        for (family, members) in by_family {
            let kind = if family.ends_with("_total") { "counter" } else { "gauge" };
            let base = family.trim_end_matches("_total");
            writeln!(out, "# TYPE {base} {kind}")?;
            for i in members {
                let s = &series[i];
                let labels =
                    format!("service=\"{}\",region=\"{}\",pod=\"{}\"", s.service, s.labels["region"], s.labels["pod"]);
                for (t, v) in &samples[&i] {
                    writeln!(out, "{family}{{{labels}}} {v} {}.{:03}", t / 1000, t % 1000)?;
                }
            }
        }
        writeln!(out, "# EOF")?;
        Ok(())
    };
    write().map_err(|e| format!("cannot write the OpenMetrics text: {e}"))?;
    let blocks = dir.join("prometheus");
    let out = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&text)
        .arg(&blocks)
        .output()
        .map_err(|e| format!("promtool: {e}"))?;
    if !out.status.success() {
        return Err(format!("promtool failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut total = 0;
    let mut stack = vec![blocks];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| e.to_string())?.flatten() {
            let meta = entry.metadata().map_err(|e| e.to_string())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The roll-ups the built-in policy keeps while an hour is younger than its `cold` step,
/// over the samples kept as long, from the rows measured: hot until `compact`, warm with
/// every roll-up until `downsample`, then warm with what dropping sparse names left beside
/// the downsampled resolutions (written in cold).
fn first_days_line(table: &[(String, u64, u64, BTreeMap<i64, u64>)], coarse_hourly: &BTreeMap<i64, u64>) {
    let policy = Policy::default_policy();
    let age = |name: &str| policy.steps.iter().find(|s| s.name() == name).and_then(|s| s.after_ms().ok());
    let (Ok(Some(d)), Some(compact), Some(cold)) = (policy.downsampling(), age("compact"), age("cold")) else {
        return;
    };
    let row = |prefix: &str| table.iter().find(|t| t.0.starts_with(prefix));
    let (Some(hot), Some(warm), Some(dropped)) = (row("hot"), row("warm ("), row("warm, sparse")) else {
        return;
    };
    let all = |r: &BTreeMap<i64, u64>| r.values().sum::<u64>() as f64;
    // Until the cold step the downsampled hours are in cold an hour per file.
    let coarse: f64 = coarse_hourly.iter().filter(|(r, _)| d.to.contains(r)).map(|(_, b)| *b as f64).sum();
    let hours = |from: i64, to: i64| (to - from).max(0) as f64 / 3_600_000.0;
    let (young, fine, rest) = (hours(0, compact), hours(compact, d.after), hours(d.after, cold));
    let samples = young * hot.2 as f64 + (fine + rest) * warm.2 as f64;
    let rollups = young * all(&hot.3) + fine * all(&warm.3) + rest * (all(&dropped.3) + coarse);
    println!(
        "roll-ups the default policy keeps over an hour's first {} (hot {}, every resolution until {}, then \
         what dropping sparse names leaves and {}): {:.3} of the samples' bytes",
        resolution_label(cold),
        resolution_label(compact),
        resolution_label(d.after),
        d.to.iter().map(|t| resolution_label(*t)).collect::<Vec<_>>().join(" + "),
        rollups / samples.max(1.0)
    );
}
