//! Series queries over roll-ups and raw samples written straight into the hot tier: which
//! source answers (`x-callscope-source`) and what.

use std::sync::Arc;

use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
use callscope_schemas::rollup::{Partial, RollupRow, SeriesKey, rollups_to_record_batch};
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use callscope_storage::{DataFileKey, HourPartition, RollupFileKey, RollupSource, parquet_file};

use super::*;

const MINUTE: i64 = 60_000;

/// A series endpoint's JSON answer and its `x-callscope-source` header.
fn series_answer(api: &Api, uri: &str) -> (Option<String>, serde_json::Value) {
    let request = Request::builder().uri(uri).body(Body::empty()).expect("request");
    api.runtime.block_on(async {
        let response = api.router.clone().oneshot(request).await.expect("infallible");
        let source = response.headers().get("x-callscope-source").map(|v| v.to_str().unwrap_or_default().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (source, serde_json::from_slice(&body).expect("json"))
    })
}

/// The points of the first series of an answer.
fn points(series: &serde_json::Value) -> Vec<(i64, f64)> {
    series[0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p[0].as_i64().unwrap_or_default(), p[1].as_f64().unwrap_or_default()))
        .collect()
}

/// The start of the hour before the current one.
fn last_hour() -> i64 {
    (callscope_runtime::now_ms() - 3_600_000).div_euclid(3_600_000) * 3_600_000
}

/// A sample of 1.0 of the counter `name` of service `gw` at `t`.
fn counter(name: &str, t: i64) -> Metric {
    Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: "gw".into(),
        labels: Default::default(),
        unit: None,
    }
}

/// A 1-minute roll-up row of `series` in Kafka partition `partition`.
fn minute_row(series: &Arc<SeriesKey>, window_start_ms: i64, partial: Partial, partition: i32) -> RollupRow {
    RollupRow { resolution_ms: MINUTE, window_start_ms, series: series.clone(), partial, partition, late: false }
}

/// Stores 1-minute roll-up rows of the hour of `t0` as one hot file.
fn put_rollups(api: &Api, t0: i64, rows: &[RollupRow]) {
    let key = RollupFileKey {
        resolution_ms: MINUTE,
        hour: HourPartition::of_unix_ms(t0),
        topic: "callscope.metrics".into(),
        partition: 0,
        source: RollupSource::Batch { first_offset: 0, last_offset: rows.len() as i64 - 1 },
    };
    let bytes = parquet_file::encode(&[rollups_to_record_batch(rows).expect("batch")]).expect("encode");
    api.runtime.block_on(api.hot.put_durable(&key.path(), bytes, false)).expect("put");
}

/// Stores raw samples of the hour of `t0` in Kafka partition `partition` (offsets from 0)
/// as one hot batch file.
fn put_raw(api: &Api, t0: i64, partition: i32, samples: Vec<Metric>) {
    let events: Vec<SourcedEvent> = samples
        .into_iter()
        .enumerate()
        .map(|(offset, m)| SourcedEvent { partition, offset: offset as i64, event: Event::Metric(m) })
        .collect();
    let key = DataFileKey {
        dataset: Dataset::Metrics,
        hour: HourPartition::of_unix_ms(t0),
        topic: "callscope.metrics".into(),
        partition,
        first_offset: 0,
        last_offset: events.len() as i64 - 1,
    };
    let bytes = parquet_file::encode(&[to_record_batch(Dataset::Metrics, &events).expect("batch")]).expect("encode");
    api.runtime.block_on(api.hot.put_durable(&key.path(), bytes, false)).expect("put");
}

/// Partition 0 has closed its windows up to minute 9 and partition 1 only up to minute 4
/// (it lags); partition 1's raw samples of minutes 5–9 are stored. Roll-ups may answer only
/// up to the slowest partition: after that, raw samples.
#[test]
fn rollups_answer_only_up_to_the_partition_furthest_behind() {
    let api = api_with(86_400_000);
    let t0 = last_hour();
    let series = Arc::new(SeriesKey::of(&counter("calls_answered", t0)));
    let rollup = |partition: i32, m: i64| {
        let mut partial = Partial::empty(MetricKind::Counter);
        partial.add(1.0, t0 + m * MINUTE);
        minute_row(&series, t0 + m * MINUTE, partial, partition)
    };
    let rows: Vec<RollupRow> = (0..10).map(|m| rollup(0, m)).chain((0..5).map(|m| rollup(1, m))).collect();
    put_rollups(&api, t0, &rows);
    // Three raw samples a minute in partition 1's minutes 5..=9.
    let raw = (5..10).flat_map(|m| (0..3).map(move |i| counter("calls_answered", t0 + m * MINUTE + i * 1000)));
    put_raw(&api, t0, 1, raw.collect());
    let uri = format!("/monitoring/metrics?name=calls_answered&agg=count&step=1m&start={t0}&end={}", t0 + 10 * MINUTE);
    let (source, series) = series_answer(&api, &uri);
    assert_eq!(source.as_deref(), Some("rollup:1m+raw"), "{series}");
    let expected: Vec<(i64, f64)> = (0..10).map(|m| (t0 + m * MINUTE, if m < 5 { 2.0 } else { 3.0 })).collect();
    assert_eq!(
        points(&series),
        expected,
        "minutes 0-4 from both partitions' roll-ups, 5-9 from partition 1's raw samples"
    );
}

/// A step finer than every roll-up resolution reads raw samples; a metric that exists only
/// as roll-ups (span metrics) is answered from the finest roll-ups, at their granularity.
#[test]
fn a_step_finer_than_the_roll_ups_reads_raw_samples_or_the_finest_roll_ups() {
    // The default resolutions.
    let api = api_with_resolutions(86_400_000, Some(vec![60_000, 3_600_000]));
    let t0 = last_hour();
    // Both metrics have 1-minute roll-ups of 4 samples a minute; only `sampled` has raw ones.
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for name in ["sampled", "spans_only"] {
        let series = Arc::new(SeriesKey::of(&counter(name, t0)));
        for m in 0..3 {
            let mut partial = Partial::empty(MetricKind::Counter);
            for i in 0..4 {
                let t = t0 + m * MINUTE + i * 15_000;
                partial.add(1.0, t);
                if name == "sampled" {
                    raw.push(counter(name, t));
                }
            }
            rows.push(minute_row(&series, t0 + m * MINUTE, partial, 0));
        }
    }
    put_rollups(&api, t0, &rows);
    put_raw(&api, t0, 0, raw);
    let uri =
        |name: &str| format!("/monitoring/metrics?name={name}&agg=count&step=15s&start={t0}&end={}", t0 + 3 * MINUTE);
    let (source, series) = series_answer(&api, &uri("sampled"));
    assert_eq!(source.as_deref(), Some("raw"), "{series}");
    let every_15s: Vec<(i64, f64)> = (0..12).map(|i| (t0 + i * 15_000, 1.0)).collect();
    assert_eq!(points(&series), every_15s, "one sample per 15 s bucket");
    let (source, series) = series_answer(&api, &uri("spans_only"));
    assert_eq!(source.as_deref(), Some("rollup:1m"), "{series}");
    let every_minute: Vec<(i64, f64)> = (0..3).map(|m| (t0 + m * MINUTE, 4.0)).collect();
    assert_eq!(points(&series), every_minute, "the finest roll-ups, a point a minute");
}

/// A policy that downsamples 1-minute roll-ups a day old to 15 minutes and deletes them
/// after `delete_source_after`.
fn to_15_minutes(
    id: &str,
    delete_source_after: Option<String>,
    drop_sparse_below: Option<u32>,
) -> callscope_storage::lifecycle::policy::Policy {
    use callscope_storage::lifecycle::policy::{Policy, PolicyStep};
    Policy {
        id: id.into(),
        description: String::new(),
        tables: vec!["metric_rollups".into()],
        steps: vec![PolicyStep::Downsample {
            after: "1d".into(),
            from: "1m".into(),
            to: vec!["15m".into()],
            delete_source_after,
            drop_sparse_below,
        }],
        enabled: true,
    }
}

/// An hour of 1-minute roll-ups downsampled by the lifecycle to 15 minutes: a 15-minute
/// step reads the coarse roll-ups (the source header says so) and answers exactly what the
/// 1-minute roll-ups answer, quantiles included.
#[test]
fn old_hours_are_answered_from_downsampled_roll_ups() {
    use callscope_storage::FileCatalog;
    use callscope_storage::lifecycle::Lifecycle;

    let api = api_with(86_400_000);
    let t0 = (callscope_runtime::now_ms() - 30 * 86_400_000).div_euclid(3_600_000) * 3_600_000;
    let series = Arc::new(SeriesKey {
        name: "asr_latency_ms".into(),
        service: "asr".into(),
        labels: Default::default(),
        kind: MetricKind::Histogram,
        unit: None,
    });
    let rows: Vec<RollupRow> = (0..60)
        .map(|m| {
            let mut partial = Partial::empty(MetricKind::Histogram);
            for i in 0..5 {
                partial.add(((m * 37 + i * 11) % 400) as f64 + 20.0, t0 + m * MINUTE + i);
            }
            minute_row(&series, t0 + m * MINUTE, partial, 0)
        })
        .collect();
    put_rollups(&api, t0, &rows);
    let get = |agg: &str, resolution: &str| {
        let uri = format!(
            "/monitoring/metrics?name=asr_latency_ms&agg={agg}&step=15m&start={t0}&end={}&resolution={resolution}",
            t0 + 60 * MINUTE
        );
        series_answer(&api, &uri)
    };
    let before: Vec<_> = ["sum", "count", "p95"].iter().map(|agg| get(agg, "auto")).collect();
    assert!(before.iter().all(|(source, _)| source.as_deref() == Some("rollup:1m")), "{before:?}");

    let lifecycle = Lifecycle::new(FileCatalog::new(api.tiers.clone()), "test");
    let policy = to_15_minutes("down", None, None);
    let job = api
        .runtime
        .block_on(lifecycle.run(&policy, "down-1", false, callscope_runtime::now_ms(), &mut |_| {}))
        .expect("job");
    assert_eq!((job.units_changed, job.errors.len()), (1, 0), "{job:?}");
    for (agg, (_, expected)) in ["sum", "count", "p95"].iter().zip(&before) {
        let (source, answer) = get(agg, "auto");
        assert_eq!(source.as_deref(), Some("rollup:15m"), "{agg}");
        assert_eq!(&answer, expected, "{agg}: the same answer from the coarse roll-ups");
        assert_eq!(get(agg, "1m").1, answer, "{agg}: asked for 1m explicitly");
    }
}

/// Two hours of a gauge, raw samples every 15 s and their 1-minute roll-ups; the lifecycle
/// downsamples both to 15 minutes and deletes the older hour's 1-minute roll-ups. A 1-minute
/// step then reads that hour from raw samples and the other from roll-ups, a 15-minute step
/// reads the downsampled roll-ups, and PromQL reads raw samples where the roll-ups went:
/// every answer is what it was before, with no gap.
#[test]
fn hours_whose_minute_roll_ups_were_deleted_are_answered_from_raw_samples_or_coarser_roll_ups() {
    use callscope_storage::FileCatalog;
    use callscope_storage::lifecycle::Lifecycle;

    const HOUR: i64 = 3_600_000;
    let api = api_with(86_400_000);
    let now = callscope_runtime::now_ms();
    let old = (now - 3 * 86_400_000).div_euclid(HOUR) * HOUR;
    let series = Arc::new(SeriesKey {
        name: "queue_len".into(),
        service: "gw".into(),
        labels: Default::default(),
        kind: MetricKind::Gauge,
        unit: None,
    });
    let value = |t: i64| ((t / 15_000) * 7 % 50) as f64;
    for hour in [old, old + HOUR] {
        let times: Vec<i64> = (0..240).map(|i| hour + i * 15_000).collect();
        let samples = times
            .iter()
            .map(|&t| Metric { kind: MetricKind::Gauge, value: value(t), ..counter("queue_len", t) })
            .collect();
        put_raw(&api, hour, 0, samples);
        let rows: Vec<RollupRow> = (0..60)
            .map(|m| {
                let mut partial = Partial::empty(MetricKind::Gauge);
                for &t in &times[m * 4..m * 4 + 4] {
                    partial.add(value(t), t);
                }
                minute_row(&series, hour + m as i64 * MINUTE, partial, 0)
            })
            .collect();
        put_rollups(&api, hour, &rows);
    }
    let (start, end) = (old, old + 2 * HOUR);
    let get = |agg: &str, step: &str| {
        series_answer(
            &api,
            &format!("/monitoring/metrics?name=queue_len&agg={agg}&step={step}&start={start}&end={end}"),
        )
    };
    let promql = || {
        let uri = format!(
            "/api/v1/query_range?query=sum_over_time(queue_len%5B1m%5D)&start={}&end={}&step=60",
            start / 1000,
            (end - MINUTE) / 1000
        );
        api.runtime.block_on(call(&api.router, "GET", &uri, None))
    };
    let (minutes, quarters, prom) = (get("avg", "1m"), get("sum", "15m"), promql());
    assert_eq!((minutes.0.as_deref(), quarters.0.as_deref()), (Some("rollup:1m"), Some("rollup:1m")));
    assert_eq!(points(&minutes.1).len(), 120, "a point a minute over both hours");
    assert_eq!(prom.0, StatusCode::OK);
    let prom_json: serde_json::Value = serde_json::from_slice(&prom.1).expect("json");
    let values = prom_json["data"]["result"][0]["values"].as_array().map_or(0, |v| v.len());
    assert_eq!(values, 120, "PromQL: a point a minute over both hours: {prom_json}");

    // Keep 1-minute roll-ups for half an hour longer than the newer hour's age.
    let kept_minutes = (now - (old + 2 * HOUR)) / MINUTE + 30;
    let policy = to_15_minutes("thin", Some(format!("{kept_minutes}m")), None);
    let lifecycle = Lifecycle::new(FileCatalog::new(api.tiers.clone()), "test");
    let job = api.runtime.block_on(lifecycle.run(&policy, "thin-1", false, now, &mut |_| {})).expect("job");
    assert_eq!((job.units_changed, job.errors.len()), (3, 0), "two downsampled, one deleted: {job:?}");

    let after = get("avg", "1m");
    assert_eq!(after.0.as_deref(), Some("rollup:1m+raw"), "the older hour from raw samples");
    assert_eq!(after.1, minutes.1, "the same points, none missing");
    let after = get("sum", "15m");
    assert_eq!(after.0.as_deref(), Some("rollup:15m"));
    assert_eq!(after.1, quarters.1);
    let after = promql();
    assert_eq!(after.0, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&after.1).expect("json"),
        serde_json::from_slice::<serde_json::Value>(&prom.1).expect("json"),
        "PromQL reads raw samples where the roll-ups were deleted"
    );
}

/// A gauge scraped every 15 s (raw samples and 1-minute roll-ups) and a span metric (roll-ups
/// only) in one hour; the lifecycle downsamples the hour to 15 minutes and drops the gauge
/// from its 1-minute roll-ups as sparse. A 1-minute step then reads the gauge from raw
/// samples and the span metric from roll-ups, a 15-minute step reads both from the coarse
/// roll-ups, and PromQL over both names reads each where it is: every answer as before.
#[test]
fn names_dropped_as_sparse_are_answered_from_raw_samples() {
    use callscope_storage::FileCatalog;
    use callscope_storage::lifecycle::Lifecycle;

    const HOUR: i64 = 3_600_000;
    let api = api_with(86_400_000);
    let now = callscope_runtime::now_ms();
    let hour = (now - 2 * 86_400_000).div_euclid(HOUR) * HOUR;
    let key = |name: &str, kind: MetricKind| {
        Arc::new(SeriesKey { name: name.into(), service: "gw".into(), labels: Default::default(), kind, unit: None })
    };
    let (gauge, spans) = (key("queue_len", MetricKind::Gauge), key("span_lat", MetricKind::Histogram));
    let value = |t: i64| ((t / 15_000) * 7 % 50) as f64;
    let times: Vec<i64> = (0..240).map(|i| hour + i * 15_000).collect();
    let samples = times.iter().map(|&t| Metric { kind: MetricKind::Gauge, value: value(t), ..counter("queue_len", t) });
    put_raw(&api, hour, 0, samples.collect());
    let mut rows: Vec<RollupRow> = Vec::new();
    for m in 0..60 {
        let (mut minute, mut span) = (Partial::empty(MetricKind::Gauge), Partial::empty(MetricKind::Histogram));
        for &t in &times[m * 4..m * 4 + 4] {
            minute.add(value(t), t);
            span.add(value(t) / 10.0, t);
        }
        rows.push(minute_row(&gauge, hour + m as i64 * MINUTE, minute, 0));
        rows.push(minute_row(&spans, hour + m as i64 * MINUTE, span, 0));
    }
    put_rollups(&api, hour, &rows);
    let (start, end) = (hour, hour + HOUR);
    let get = |name: &str, agg: &str, step: &str| {
        series_answer(&api, &format!("/monitoring/metrics?name={name}&agg={agg}&step={step}&start={start}&end={end}"))
    };
    let promql = || {
        let query = "sum(sum_over_time(queue_len%5B1m%5D))%20%2B%20sum(count_over_time(span_lat%5B1m%5D))";
        // Evaluated up to the hour's end, so that its last window is whole on both sides
        // (raw samples are read up to the evaluation's end, roll-ups by window).
        let uri = format!("/api/v1/query_range?query={query}&start={}&end={}&step=60", start / 1000, end / 1000);
        let (status, body) = api.runtime.block_on(call(&api.router, "GET", &uri, None));
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")
    };
    let before = [get("queue_len", "avg", "1m"), get("span_lat", "count", "1m"), get("queue_len", "max", "15m")];
    assert!(before.iter().all(|(source, _)| source.as_deref() == Some("rollup:1m")), "{before:?}");
    assert_eq!(points(&before[0].1).len(), 60);
    let prom = promql();
    assert_eq!(prom["data"]["result"][0]["values"].as_array().map_or(0, |v| v.len()), 60, "{prom}");

    let lifecycle = Lifecycle::new(FileCatalog::new(api.tiers.clone()), "test");
    let job = api
        .runtime
        .block_on(lifecycle.run(&to_15_minutes("sparse", None, Some(8)), "sparse-1", false, now, &mut |_| {}))
        .expect("job");
    assert!(job.errors.is_empty(), "{job:?}");
    let after = [get("queue_len", "avg", "1m"), get("span_lat", "count", "1m"), get("queue_len", "max", "15m")];
    let sources: Vec<Option<&str>> = after.iter().map(|(source, _)| source.as_deref()).collect();
    assert_eq!(sources, [Some("raw"), Some("rollup:1m"), Some("rollup:15m")]);
    for ((_, got), (_, expected)) in after.iter().zip(&before) {
        assert_eq!(got, expected, "the same points from their new sources");
    }
    assert_eq!(promql(), prom, "PromQL reads each name where it is");
}
