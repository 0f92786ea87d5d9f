use proptest::prelude::*;

use super::*;

fn key(kind: MetricKind) -> Arc<SeriesKey> {
    Arc::new(SeriesKey {
        name: "ai_response_time_ms".into(),
        service: "ai-engine".into(),
        labels: [("model".to_string(), "qwen".to_string())].into_iter().collect(),
        kind,
        unit: Some("milliseconds".into()),
    })
}

#[test]
fn resolution_labels() {
    assert_eq!(resolution_label(10_000), "10s");
    assert_eq!(resolution_label(60_000), "1m");
    assert_eq!(resolution_label(3_600_000), "1h");
    assert_eq!(resolution_label(90_000), "1m30s");
}

#[test]
fn rows_round_trip_through_arrow() {
    let mut partial = Partial::empty(MetricKind::Histogram);
    for v in [3.0, 1.0, 250.0, 17.5] {
        partial.add(v, 1_000);
    }
    let rows = vec![
        RollupRow {
            resolution_ms: 10_000,
            window_start_ms: 0,
            series: key(MetricKind::Histogram),
            partial,
            partition: 2,
            late: false,
        },
        RollupRow {
            resolution_ms: 60_000,
            window_start_ms: 60_000,
            series: key(MetricKind::Gauge),
            partial: {
                let mut p = Partial::empty(MetricKind::Gauge);
                p.add(0.5, 61_000);
                p
            },
            partition: 0,
            late: true,
        },
    ];
    let batch = rollups_to_record_batch(&rows).expect("batch");
    let back = rollups_from_record_batch(&batch, &mut Arc::new).expect("rows");
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].series, rows[0].series);
    assert_eq!(back[0].partial.count, 4);
    assert_eq!(back[0].partial.max, 250.0);
    assert_eq!(back[0].partial.sum, 271.5);
    assert!(back[0].partial.sketch.is_some());
    let median = back[0].partial.quantile(0.5).expect("median");
    assert!((median - 3.0).abs() <= 0.03 + 1e-9 || (median - 17.5).abs() <= 0.175, "median {median}");
    assert!(back[1].late);
    assert!(back[1].partial.sketch.is_none());
    assert_eq!(back[1].partial.last, 0.5);
}

fn partial_of(values: &[(f64, i64)], kind: MetricKind) -> Partial {
    let mut p = Partial::empty(kind);
    for (v, t) in values {
        p.add(*v, *t);
    }
    p
}

proptest! {
    /// Merging partials of any split equals aggregating everything at once, and quantiles
    /// stay within the sketch's relative accuracy of the exact rank statistic.
    #[test]
    fn merging_is_order_independent(
        values in prop::collection::vec((0.001f64..10_000.0, 0i64..100), 1..300),
        split in 0usize..300,
    ) {
        let split = split.min(values.len());
        let whole = partial_of(&values, MetricKind::Histogram);
        let mut left = partial_of(&values[..split], MetricKind::Histogram);
        let right = partial_of(&values[split..], MetricKind::Histogram);
        let mut right_first = right.clone();
        left.merge(&right).expect("merge");
        right_first.merge(&partial_of(&values[..split], MetricKind::Histogram)).expect("merge");
        for merged in [&left, &right_first] {
            prop_assert_eq!(merged.count, whole.count);
            prop_assert!((merged.sum - whole.sum).abs() <= 1e-9 * whole.sum.abs().max(1.0));
            prop_assert_eq!(merged.min, whole.min);
            prop_assert_eq!(merged.max, whole.max);
            prop_assert_eq!(merged.last, whole.last);
            prop_assert_eq!(merged.last_time_ms, whole.last_time_ms);
        }
        let mut sorted: Vec<f64> = values.iter().map(|(v, _)| *v).collect();
        sorted.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.95, 0.99] {
            let estimate = left.quantile(q).expect("quantile");
            // DDSketch answers the value at rank floor(q * (n - 1)) within the relative accuracy.
            let exact = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
            prop_assert!((estimate - exact).abs() <= SKETCH_RELATIVE_ACCURACY * exact + 1e-9,
                "q={} estimate={} exact={}", q, estimate, exact);
        }
    }
}
