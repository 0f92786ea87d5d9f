use std::collections::BTreeMap;

use callscope_schemas::MetricKind;
use proptest::prelude::*;

use super::*;

fn config(late_corrections: bool) -> Arc<AggregationConfig> {
    Arc::new(AggregationConfig {
        resolutions_ms: vec![10_000, 60_000],
        allowed_lateness_ms: 5_000,
        late_corrections,
        max_series_per_metric: 3,
        ..Default::default()
    })
}

fn sample(name: &str, kind: MetricKind, host: &str, value: f64, t: i64) -> Metric {
    Metric {
        name: name.into(),
        kind,
        value,
        timestamp_ms: t,
        service: "svc".into(),
        labels: [("host".to_string(), host.to_string())].into_iter().collect(),
        unit: None,
    }
}

fn gauge(host: &str, value: f64, t: i64) -> Metric {
    sample("g", MetricKind::Gauge, host, value, t)
}

#[test]
fn windows_close_when_the_watermark_passes_their_end() {
    let mut agg = PartitionAggregator::new(config(true), 0);
    assert_eq!(agg.process(0, &gauge("a", 1.0, 1_000)), Outcome::Aggregated);
    assert_eq!(agg.process(1, &gauge("a", 2.0, 12_000)), Outcome::Aggregated);
    // Watermark 7 s: the [0, 10 s) window is still open (allowed lateness 5 s).
    assert!(agg.take_emitted().is_empty());
    // Inside the allowed lateness: updates its window.
    assert_eq!(agg.process(2, &gauge("a", 5.0, 9_000)), Outcome::Aggregated);
    assert_eq!(agg.process(3, &gauge("a", 3.0, 15_000)), Outcome::Aggregated);
    let rows = agg.take_emitted();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].resolution_ms, rows[0].window_start_ms, rows[0].late), (10_000, 0, false));
    assert_eq!(rows[0].partial.count, 2);
    assert_eq!(rows[0].partial.last, 5.0);
    assert_eq!(rows[0].partial.max, 5.0);
    assert_eq!(agg.watermark_ms(), Some(10_000));
}

#[test]
fn late_events_become_corrections_and_are_counted() {
    for corrections in [true, false] {
        let mut agg = PartitionAggregator::new(config(corrections), 0);
        agg.process(0, &gauge("a", 1.0, 1_000));
        agg.process(1, &gauge("a", 1.0, 16_000));
        let closed = agg.take_emitted();
        assert_eq!(closed.len(), 1);
        // The [0, 10 s) window closed at watermark 11 s: this sample is late for it, but the
        // one-minute window is still open and takes it normally.
        assert_eq!(agg.process(2, &gauge("a", 7.0, 2_000)), Outcome::Late);
        let rows = agg.take_emitted();
        if corrections {
            assert_eq!(rows.len(), 1);
            assert!(rows[0].late);
            assert_eq!((rows[0].resolution_ms, rows[0].window_start_ms), (10_000, 0));
            assert_eq!(rows[0].partial.sum, 7.0);
        } else {
            assert!(rows.is_empty());
        }
        assert!(agg.close_idle(None));
        let minute: Vec<_> = agg.take_emitted().into_iter().filter(|r| r.resolution_ms == 60_000).collect();
        assert_eq!(minute.len(), 1);
        assert_eq!(minute[0].partial.count, 3);
    }
}

#[test]
fn the_cardinality_limit_rejects_new_series_only() {
    let mut agg = PartitionAggregator::new(config(true), 0);
    for (i, host) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(agg.process(i as i64, &gauge(host, 1.0, 1_000)), Outcome::Aggregated);
    }
    assert_eq!(agg.process(3, &gauge("d", 1.0, 1_000)), Outcome::OverLimit);
    assert_eq!(agg.process(4, &gauge("a", 1.0, 1_000)), Outcome::Aggregated);
    // Another metric name has its own budget.
    assert_eq!(agg.process(5, &sample("h", MetricKind::Counter, "d", 1.0, 1_000)), Outcome::Aggregated);
    assert_eq!(agg.active_series(), 4);
    assert!(agg.state_bytes() > 0);
    // Once the series' windows closed, they no longer count.
    agg.close_idle(None);
    assert_eq!(agg.active_series(), 0);
    assert_eq!(agg.process(6, &gauge("d", 1.0, 200_000)), Outcome::Aggregated);
    assert_eq!(agg.process(6, &gauge("d", 1.0, 200_000)), Outcome::Replayed);
}

type Cell = (i64, i64, String, bool);

fn merge_rows(rows: &[RollupRow]) -> BTreeMap<Cell, Partial> {
    let mut merged: BTreeMap<Cell, Partial> = BTreeMap::new();
    for row in rows {
        let key = (row.resolution_ms, row.window_start_ms, row.series.labels["host"].clone(), false);
        merged.entry(key).or_insert_with(|| Partial::empty(row.series.kind)).merge(&row.partial).expect("merge");
    }
    merged
}

fn stream() -> impl Strategy<Value = Vec<(u8, f64, i64)>> {
    // (series, value, event time): times wander forward with jitter up to ±40 s, so that
    // some samples are out of order within the lateness and some are late.
    prop::collection::vec((0u8..3, 0.5f64..500.0, -40_000i64..40_000), 1..200).prop_map(|steps| {
        let mut clock = 1_700_000_000_000i64;
        steps
            .into_iter()
            .map(|(s, v, jitter)| {
                clock += 1_500;
                (s, v, clock + jitter)
            })
            .collect()
    })
}

fn run(agg: &mut PartitionAggregator, events: &[(u8, f64, i64)], from: usize) -> (Vec<RollupRow>, usize) {
    let mut rows = Vec::new();
    let mut late = 0;
    for (i, (s, v, t)) in events.iter().enumerate().skip(from) {
        let m = sample("lat", MetricKind::Histogram, &format!("h{s}"), *v, *t);
        if agg.process(i as i64, &m) == Outcome::Late {
            late += 1;
        }
        rows.extend(agg.take_emitted());
    }
    (rows, late)
}

proptest! {
    /// With corrections on, every window's rows (closed + corrections) merge to exactly the
    /// aggregate of all its samples, however out of order they came.
    #[test]
    fn windows_and_corrections_equal_the_exact_aggregates(events in stream()) {
        let mut agg = PartitionAggregator::new(config(true), 0);
        let (mut rows, _) = run(&mut agg, &events, 0);
        agg.close_idle(None);
        rows.extend(agg.take_emitted());
        let merged = merge_rows(&rows);
        let mut exact: BTreeMap<Cell, Partial> = BTreeMap::new();
        for (s, v, t) in &events {
            for r in [10_000i64, 60_000] {
                exact.entry((r, t.div_euclid(r) * r, format!("h{s}"), false))
                    .or_insert_with(|| Partial::empty(MetricKind::Histogram))
                    .add(*v, *t);
            }
        }
        prop_assert_eq!(merged.len(), exact.len());
        for (cell, want) in &exact {
            let got = &merged[cell];
            prop_assert_eq!(got.count, want.count);
            prop_assert!((got.sum - want.sum).abs() < 1e-6 * want.sum.abs().max(1.0));
            prop_assert_eq!((got.min, got.max, got.last), (want.min, want.max, want.last));
        }
    }

    /// Checkpointing at any point, restoring and replaying the rest emits exactly what an
    /// uninterrupted aggregator emits.
    #[test]
    fn a_restored_checkpoint_continues_exactly(events in stream(), cut in 0usize..200) {
        let cut = cut.min(events.len());
        let mut whole = PartitionAggregator::new(config(true), 0);
        let (mut expected, expected_late) = run(&mut whole, &events, 0);
        whole.close_idle(None);
        expected.extend(whole.take_emitted());

        let mut first = PartitionAggregator::new(config(true), 0);
        let (mut got, late_before) = run(&mut first, &events[..cut], 0);
        let (batch, metadata) = first.checkpoint(&[]).expect("checkpoint");
        let bytes = callscope_storage::parquet_file::encode_with_metadata(&[batch], metadata).expect("encode");
        let (batches, metadata) = callscope_storage::parquet_file::decode_with_metadata(bytes).expect("decode");
        let mut restored = PartitionAggregator::restore(config(true), 0, &batches, &metadata).expect("restore").aggregator;
        // Replay from the start: offsets already reflected are skipped.
        let (rest, late_after) = run(&mut restored, &events, 0);
        got.extend(rest);
        restored.close_idle(None);
        got.extend(restored.take_emitted());
        prop_assert_eq!(late_before + late_after, expected_late);
        let key = |r: &RollupRow| (r.resolution_ms, r.window_start_ms, r.late, r.series.labels["host"].clone(), r.partial.count, r.partial.sum.to_bits());
        let mut a: Vec<_> = expected.iter().map(key).collect();
        let mut b: Vec<_> = got.iter().map(key).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }
}

#[test]
fn settings_are_validated() {
    let ok = AggregationConfig { resolutions_ms: vec![60_000, 10_000, 60_000], ..Default::default() };
    assert_eq!(ok.validated().expect("valid").resolutions_ms, vec![10_000, 60_000]);
    let refused = |config: AggregationConfig| config.validated().expect_err("refused");
    assert_eq!(
        refused(AggregationConfig { resolutions_ms: vec![], ..Default::default() }),
        AggregationConfigError::NoResolution
    );
    let err = refused(AggregationConfig { resolutions_ms: vec![1_500], ..Default::default() });
    assert_eq!(err, AggregationConfigError::ResolutionNotWholeSeconds(1_500));
    assert_eq!(err.to_string(), "window resolution 1500 ms must be a whole number of seconds");
    assert_eq!(
        refused(AggregationConfig { allowed_lateness_ms: -1, ..Default::default() }),
        AggregationConfigError::NegativeLateness
    );
    assert_eq!(
        refused(AggregationConfig { max_series_per_metric: 0, ..Default::default() }),
        AggregationConfigError::ZeroSeriesLimit
    );
}

/// Spans of a few traces in random order: `(trace, span, parent, service, jitter ms)`.
fn span_stream() -> impl Strategy<Value = Vec<(u8, u8, Option<u8>, u8, i64)>> {
    prop::collection::vec((0u8..4, 1u8..6, 0u8..3, -20_000i64..20_000), 1..120).prop_map(|raw| {
        raw.into_iter()
            .map(|(trace, span, service, jitter)| {
                // Span 1 is the root; span k > 1 is a child of span k / 2.
                let parent = (span > 1).then_some(span / 2);
                (trace, span, parent, service, jitter)
            })
            .collect()
    })
}

fn run_spans(agg: &mut PartitionAggregator, spans: &[(u8, u8, Option<u8>, u8, i64)], from: usize) -> Vec<RollupRow> {
    let mut rows = Vec::new();
    let mut clock = 1_700_000_000_000i64;
    for (i, (trace, span, parent, service, jitter)) in spans.iter().enumerate() {
        clock += 1_000;
        if i < from {
            continue;
        }
        let s = callscope_schemas::Span {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{span:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            service: format!("svc{service}"),
            operation: "op".into(),
            kind: callscope_schemas::SpanKind::Server,
            start_time_us: (clock + jitter) * 1000,
            duration_us: 1_000 * (1 + i64::from(*span)),
            status: callscope_schemas::SpanStatus::Ok,
            attributes: Default::default(),
            status_message: None,
            resource_attributes: Default::default(),
            events: vec![],
        };
        agg.process_span(i as i64, &s);
        rows.extend(agg.take_emitted());
    }
    rows
}

/// Edge calls per (client, server) in `rows` (one resolution).
fn edge_calls(rows: &[RollupRow]) -> BTreeMap<(String, String), u64> {
    let mut calls = BTreeMap::new();
    for r in rows.iter().filter(|r| r.resolution_ms == 10_000 && r.series.name == "traces_service_graph_request_total")
    {
        *calls.entry((r.series.labels["client"].clone(), r.series.labels["server"].clone())).or_default() +=
            r.partial.sum as u64;
    }
    calls
}

proptest! {
    /// Service graph edges from spans in any order equal the cross-service parent/child
    /// pairs, and a checkpoint at any point (pairing state included) changes nothing.
    #[test]
    fn span_edges_are_exact_across_a_checkpoint(spans in span_stream(), cut in 0usize..120) {
        let config = || Arc::new(AggregationConfig { max_series_per_metric: 1_000, ..(*config(true)).clone() });
        let mut whole = PartitionAggregator::new(config(), 0);
        let mut expected = run_spans(&mut whole, &spans, 0);
        whole.close_idle(None);
        expected.extend(whole.take_emitted());
        // The exact pairs: the last span of each (trace, id) is the one stored as the parent
        // (ids repeat in this stream); count child → parent service pairs as the pairing
        // does, in arrival order.
        let mut seen: BTreeMap<(u8, u8), u8> = BTreeMap::new();
        let mut waiting: BTreeMap<(u8, u8), Vec<u8>> = BTreeMap::new();
        let mut exact: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (trace, span, parent, service, _) in &spans {
            for child in waiting.remove(&(*trace, *span)).unwrap_or_default() {
                if child != *service {
                    *exact.entry((format!("svc{service}"), format!("svc{child}"))).or_default() += 1;
                }
            }
            if let Some(p) = parent {
                match seen.get(&(*trace, *p)) {
                    Some(client) if client != service => {
                        *exact.entry((format!("svc{client}"), format!("svc{service}"))).or_default() += 1
                    }
                    Some(_) => {}
                    None => waiting.entry((*trace, *p)).or_default().push(*service),
                }
            }
            seen.entry((*trace, *span)).or_insert(*service);
        }
        prop_assert_eq!(edge_calls(&expected), exact);

        let cut = cut.min(spans.len());
        let mut first = PartitionAggregator::new(config(), 0);
        let mut got = run_spans(&mut first, &spans[..cut], 0);
        let (batch, metadata) = first.checkpoint(&[]).expect("checkpoint");
        let bytes = callscope_storage::parquet_file::encode_with_metadata(&[batch], metadata).expect("encode");
        let (batches, metadata) = callscope_storage::parquet_file::decode_with_metadata(bytes).expect("decode");
        let mut restored = PartitionAggregator::restore(config(), 0, &batches, &metadata).expect("restore").aggregator;
        got.extend(run_spans(&mut restored, &spans, 0));
        restored.close_idle(None);
        got.extend(restored.take_emitted());
        prop_assert_eq!(edge_calls(&got), edge_calls(&expected));
    }
}
