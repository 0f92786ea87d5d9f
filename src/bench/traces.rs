//! `callscope bench traces`: trace lookups at scale.
//!
//! Generates `--spans` spans of simulated calls (the load generator's call flow: gateway,
//! whitelist, spam check, ASR, AI, TTS, billing, with realistic failure and slow rates)
//! spread evenly over `--days` ending now, writes them as the workers' encoder does (a
//! file per flush and hour, and its trace-id index segment), compacts every hour older than
//! 2 h with the lifecycle (spans sorted by trace id, bloom filter on it), merges the index,
//! then times through the query API's own code:
//!
//! * lookup by trace id **without a time range**, for `--lookups` random ids of the oldest
//!   day and as many of the newest hour (p50 / p95 each; goal p95 < 50 ms at 10 M spans);
//! * a search by service + attribute + minimum duration over the last 24 h (the gateway's
//!   calls in one region slower than 1.5 s, the 20 newest; p95 of 5; goal < 500 ms);
//! * the service dependency graph over 7 days, from the edges the stream's windows paired
//!   (the workers' aggregation runs over the generated spans as they are written), and
//!   joined from the spans for comparison (p95 of 3; goal < 200 ms);
//!
//! and prints the bytes per span stored in each tier.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use callscope_pipeline::windows::{AggregationConfig, PartitionAggregator};
use callscope_query_api::trace_search::{TraceSearch, search};
use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::{Dataset, Event};
use callscope_storage::layout::HourPartition;
use callscope_storage::lifecycle::Lifecycle;
use callscope_storage::lifecycle::policy::{Policy, PolicyStep};
use callscope_storage::{DataTable, FileCatalog, Tiers};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::{percentile, scratch_dir, write_hot_file, write_rollup_files};
use crate::cli::BenchTracesConfig;
use crate::loadgen::CallSimulator;

const FLUSH_ROWS: usize = 50_000;

/// p50 and p95 (ms) of `times` (seconds).
fn p50_p95(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (percentile(times, 50.0) * 1000.0, percentile(times, 95.0) * 1000.0)
}

pub async fn run(config: BenchTracesConfig) -> anyhow::Result<()> {
    let dir = scratch_dir("traces")?;
    let tiers = Tiers::local(&dir)?;
    let now = callscope_runtime::now_ms();
    let span_ms = i64::from(config.days.max(1)) * 86_400_000;
    let start = now - span_ms;
    println!("bench traces: {} spans over {} days; scratch {}", config.spans, config.days.max(1), dir.display());

    // Generate, a call at a time in time order, and write hot files per flush and hour.
    let started = Instant::now();
    let mut sim = CallSimulator::new(config.seed);
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5eed);
    // Calls per span, measured on a sample first, spreads the calls evenly over the range.
    let sample: usize =
        (0..200).map(|_| sim.call_events(now).iter().filter(|e| matches!(e, Event::Span(_))).count()).sum();
    let calls = (config.spans as f64 / (sample as f64 / 200.0)).ceil().max(1.0) as u64;
    let mut pending: Vec<SourcedEvent> = Vec::new();
    let mut pending_hour: Option<HourPartition> = None;
    let (mut offset, mut spans, mut files) = (0i64, 0u64, 0u64);
    let (mut old_ids, mut new_ids): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let (mut old_seen, mut new_seen) = (0u64, 0u64);
    let mut last_report = Instant::now();
    // The workers' windows over the span partition: RED metrics and service graph edges,
    // written as roll-ups with each file as the workers write them with each batch.
    let mut windows = PartitionAggregator::new(
        Arc::new(AggregationConfig { resolutions_ms: vec![60_000, 3_600_000], ..Default::default() }),
        0,
    );
    let (mut rollup_rows, mut first_offset) = (0usize, 0i64);
    for call in 0..calls {
        let t = start + (call as i128 * span_ms as i128 / calls as i128) as i64;
        let hour = HourPartition::of_unix_ms(t);
        if pending_hour != Some(hour) || pending.len() >= FLUSH_ROWS {
            if let Some(h) = pending_hour.filter(|_| !pending.is_empty()) {
                write_hot_file(&tiers, Dataset::Spans, h, &std::mem::take(&mut pending)).await?;
                let rows = windows.take_emitted();
                rollup_rows += rows.len();
                write_rollup_files(&tiers, Dataset::Spans.default_topic(), first_offset, offset - 1, &rows).await?;
                first_offset = offset;
                files += 1;
            }
            pending_hour = Some(hour);
        }
        let mut trace_id = None;
        for event in sim.call_events(t) {
            if let Event::Span(s) = &event {
                trace_id.get_or_insert_with(|| s.trace_id.clone());
                windows.process_span(offset, s);
                pending.push(SourcedEvent { partition: 0, offset, event });
                offset += 1;
                spans += 1;
            }
        }
        if last_report.elapsed().as_secs() >= 2 {
            last_report = Instant::now();
            eprintln!("  generated {spans} spans ({:.0} %)", call as f64 * 100.0 / calls as f64);
        }
        // Reservoirs (uniform samples) of ids from the oldest day and the newest hour.
        if let Some(id) = trace_id {
            // The newest hour first: with `--days 1` it lies inside the oldest day too.
            let (ids, seen) = if t >= now - 3_600_000 {
                (&mut new_ids, &mut new_seen)
            } else if t < start + 86_400_000 {
                (&mut old_ids, &mut old_seen)
            } else {
                continue;
            };
            *seen += 1;
            if ids.len() < config.lookups {
                ids.push(id);
            } else {
                let j = rng.random_range(0..*seen) as usize;
                if j < ids.len() {
                    ids[j] = id;
                }
            }
        }
    }
    if let Some(h) = pending_hour.filter(|_| !pending.is_empty()) {
        write_hot_file(&tiers, Dataset::Spans, h, &pending).await?;
        files += 1;
    }
    windows.close_idle(None);
    let rows = windows.take_emitted();
    rollup_rows += rows.len();
    write_rollup_files(&tiers, Dataset::Spans.default_topic(), first_offset, offset.max(first_offset + 1) - 1, &rows)
        .await?;
    println!("the stream's windows emitted {rollup_rows} roll-up rows (span RED metrics and service graph edges)");
    println!("generated and wrote {spans} spans in {files} hot files in {:.1} s", started.elapsed().as_secs_f64());

    // Compact every hour older than 2 h.
    let started = Instant::now();
    let catalog = FileCatalog::new(tiers.clone());
    let policy = Policy {
        id: "bench-traces".into(),
        description: String::new(),
        tables: vec![DataTable::Events(Dataset::Spans).name().to_string()],
        steps: vec![PolicyStep::Compact { after: "2h".into() }],
        enabled: true,
    };
    let lifecycle = Lifecycle::new(catalog.clone(), "bench");
    let job = lifecycle.run(&policy, &Lifecycle::new_job_id(&policy.id, now), false, now, &mut |_| {}).await?;
    anyhow::ensure!(job.errors.is_empty(), "compaction: {:?}", job.errors);
    println!("compacted in {:.1} s", started.elapsed().as_secs_f64());
    // Merge the trace-id index's segments, as the lifecycle schedule does.
    let started = Instant::now();
    let index = callscope_storage::trace_index::TraceIndex::new(tiers.hot.clone());
    let merged = callscope_storage::trace_index::compact(&index, "bench", now).await?;
    let health = index.health().await?;
    println!(
        "merged {} trace-index segments into {} runs ({} traces, {:.1} MB) in {:.1} s",
        merged.segments_merged,
        health.runs,
        health.entries,
        merged.bytes_written as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // The queries, without the Parquet reader evaluating filters (the default) and with.
    for pushdown in [false, true] {
        let mut state = super::query_speed::state(&tiers)?;
        state.engine = callscope_query_api::QueryEngine::new(
            &tiers,
            callscope_query_api::engine::EngineOptions {
                target_partitions: 2,
                pushdown_filters: pushdown,
                ..Default::default()
            },
        )?;
        state.resolutions_ms = vec![60_000, 3_600_000];
        println!("\nParquet filter pushdown {}:", if pushdown { "on" } else { "off (the default)" });
        queries(&state, now, &old_ids, &new_ids).await?;
    }
    let usage = callscope_storage::usage::collect(&catalog).await?;
    for u in usage.iter().filter(|u| u.table == "spans") {
        println!(
            "{:<8} {:>6} files {:>12} spans {:>14} bytes {:>8.1} bytes/span",
            u.tier,
            u.files,
            u.rows,
            u.bytes,
            u.bytes as f64 / u.rows.max(1) as f64
        );
    }
    println!("\n(scratch data left in {} for inspection)", dir.display());
    Ok(())
}

/// Lookups by id, the search and the dependencies, timed and printed.
async fn queries(
    state: &callscope_query_api::AppState,
    now: i64,
    old_ids: &[String],
    new_ids: &[String],
) -> anyhow::Result<()> {
    // Lookups by id, no time range.
    let mut lookups = BTreeMap::new();
    for (label, ids) in [("oldest day (warm)", old_ids), ("newest hour (hot)", new_ids)] {
        let mut times = Vec::with_capacity(ids.len());
        for id in ids {
            let t = Instant::now();
            let found = callscope_query_api::traces::load_spans(state, id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(!found.is_empty(), "trace {id} not found");
        }
        lookups.insert(label, (ids.len(), p50_p95(&mut times)));
    }
    // Search over the last 24 h.
    let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let q = TraceSearch::parse(
        params(&[
            ("service", "call-gateway"),
            ("attr", "region=cn-east"),
            ("min_duration", "1.5s"),
            ("start", "now-24h"),
        ]),
        now,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        found = search(state, &q).await.map_err(|e| anyhow::anyhow!("{e}"))?.len();
        times.push(t.elapsed().as_secs_f64());
    }
    let search_times = p50_p95(&mut times);
    // Dependencies over 7 days (a failure, such as the query's memory limit, is a result).
    let mut times = Vec::new();
    let mut edges = Ok(0);
    for _ in 0..3 {
        let t = Instant::now();
        edges = callscope_query_api::trace_dependencies::edges(state, (now - 7 * 86_400_000) * 1000, now * 1000, None)
            .await
            .map(|e| e.len())
            .map_err(|e| e.to_string());
        times.push(t.elapsed().as_secs_f64());
        if edges.is_err() {
            break;
        }
    }
    let deps_times = p50_p95(&mut times);
    // The stream's edges against the spans joined at query time, over one whole hour.
    let hour_start = (now - 2 * 3_600_000).div_euclid(3_600_000) * 3_600_000;
    let (from_us, to_us) = (hour_start * 1000, (hour_start + 3_600_000) * 1000);
    use callscope_query_api::trace_dependencies::{EdgeSource, edges_from};
    let calls = |edges: Vec<callscope_query_api::trace_dependencies::Edge>| {
        edges.into_iter().map(|e| ((e.parent, e.child), (e.calls, e.errors))).collect::<BTreeMap<_, _>>()
    };
    let t = Instant::now();
    let stream_hour = edges_from(state, EdgeSource::Stream, from_us, to_us, None).await.map(calls);
    let stream_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let spans_hour = edges_from(state, EdgeSource::Spans, from_us, to_us, None).await.map(calls);
    let spans_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!();
    println!("{:<58} {:>10} {:>10} {:>10}", "query", "p50 ms", "p95 ms", "goal p95");
    for (label, (n, (p50, p95))) in &lookups {
        println!(
            "{:<58} {p50:>10.1} {p95:>10.1} {:>10}",
            format!("trace by id, no time range, {label}, {n} ids"),
            "< 50"
        );
    }
    let (p50, p95) = search_times;
    println!(
        "{:<58} {p50:>10.1} {p95:>10.1} {:>10}",
        format!("search call-gateway + region + >= 1.5s, 24 h ({found} traces)"),
        "< 500"
    );
    let (p50, p95) = deps_times;
    match edges {
        Ok(edges) => {
            println!("{:<58} {p50:>10.1} {p95:>10.1} {:>10}", format!("dependencies, 7 days ({edges} edges)"), "< 200")
        }
        Err(e) => println!(
            "{:<58} failed after {p95:.0} ms: {}",
            "dependencies, 7 days",
            e.lines().next().unwrap_or_default()
        ),
    }
    // The stream counts a call in the window of the child's start; the join needs both
    // spans inside the hour: calls crossing the hour's edges differ by design.
    match (&stream_hour, &spans_hour) {
        (Ok(stream), Ok(spans)) => {
            let total = |m: &BTreeMap<(String, String), (i64, i64)>| {
                m.values().fold((0i64, 0i64), |(c, e), (c2, e2)| (c + c2, e + e2))
            };
            let ((sc, se), (jc, je)) = (total(stream), total(spans));
            println!(
                "dependencies over one hour: stream {stream_ms:.1} ms, spans joined {spans_ms:.1} ms; edges {} / {}; \
                 calls {sc} / {jc} ({:+.3} %), errors {se} / {je}",
                stream.len(),
                spans.len(),
                100.0 * (sc - jc) as f64 / jc.max(1) as f64
            )
        }
        (a, b) => println!("dependencies over one hour: stream {:?}, spans {:?}", a.as_ref().err(), b.as_ref().err()),
    }
    println!();
    Ok(())
}
