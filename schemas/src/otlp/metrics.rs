//! OTLP metrics → metric events, named as Prometheus' OTLP translation names them, so
//! that windows, alert rules and dashboards read them like any other series:
//!
//! | OTLP | events (kind) |
//! | --- | --- |
//! | gauge | `name` (gauge) |
//! | monotonic sum, delta temporality | `name` (counter: the increment) |
//! | cumulative or non-monotonic sum | `name` (gauge: the reported total) |
//! | histogram, exponential histogram | `name_count`, `name_sum`, `name_bucket{le}` (counters when delta, gauges when cumulative), `name_min`, `name_max` (gauges) |
//! | summary | `name{quantile}`, `name_count`, `name_sum` (gauges) |
//!
//! Counters in callscope are increments: configure SDKs with delta temporality
//! (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`) for rates of counters;
//! cumulative totals are kept as gauges, as reported. The service is the resource's
//! `service.name`; labels are the data point's attributes. Data points flagged "no recorded
//! value" are skipped; a point without a time, or with a value that is not finite, is
//! rejected.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric as OtlpMetric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint, metric::Data, number_data_point,
};

use super::{Decoded, OtlpEncoding, OtlpError, attributes, decode_request, service_name};
use crate::events::{Event, Labels, Metric, MetricKind};

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// Decodes a metrics export request, data point by data point.
pub fn decode(bytes: &[u8], encoding: OtlpEncoding) -> Result<Decoded<ExportMetricsServiceRequest>, OtlpError> {
    let request: ExportMetricsServiceRequest = decode_request(bytes, encoding)?;
    Ok(convert(request))
}

/// What one data point becomes.
struct Point<'a> {
    metric: &'a OtlpMetric,
    service: &'a str,
    labels: Labels,
    time_unix_nano: u64,
    flags: u32,
}

impl Point<'_> {
    fn event(&self, suffix: &str, kind: MetricKind, value: f64, extra: Option<(&str, String)>) -> Event {
        let mut labels = self.labels.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_string(), v);
        }
        Event::Metric(Metric {
            name: format!("{}{suffix}", self.metric.name),
            kind,
            value,
            timestamp_ms: i64::try_from(self.time_unix_nano / 1_000_000).unwrap_or(i64::MAX),
            service: self.service.to_string(),
            labels,
            unit: Some(self.metric.unit.clone()).filter(|u| !u.is_empty()),
        })
    }

    /// The events of the point, or why it is rejected; none for "no recorded value".
    fn check(&self, events: Vec<Event>) -> Result<Vec<Event>, String> {
        if self.flags & NO_RECORDED_VALUE != 0 {
            return Ok(Vec::new());
        }
        if self.time_unix_nano == 0 {
            return Err(format!("metric {:?}: a data point has no timeUnixNano", self.metric.name));
        }
        for event in &events {
            event.validate().map_err(|(field, why)| format!("metric {:?}: {field} {why}", self.metric.name))?;
        }
        Ok(events)
    }
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

fn delta(temporality: i32) -> bool {
    temporality == AggregationTemporality::Delta as i32
}

/// Upper bound text of a bucket as Prometheus writes `le`.
fn le(bound: f64) -> String {
    if bound == f64::INFINITY { "+Inf".into() } else { format!("{bound}") }
}

fn histogram_events(p: &Point<'_>, h: &HistogramDataPoint, is_delta: bool) -> Vec<Event> {
    let kind = if is_delta { MetricKind::Counter } else { MetricKind::Gauge };
    let mut events = vec![p.event("_count", kind, h.count as f64, None)];
    if let Some(sum) = h.sum {
        events.push(p.event("_sum", if sum >= 0.0 { kind } else { MetricKind::Gauge }, sum, None));
    }
    let mut cumulative = 0u64;
    for (i, count) in h.bucket_counts.iter().enumerate() {
        cumulative += count;
        let bound = h.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
        events.push(p.event("_bucket", kind, cumulative as f64, Some(("le", le(bound)))));
    }
    events.extend(h.min.map(|v| p.event("_min", MetricKind::Gauge, v, None)));
    events.extend(h.max.map(|v| p.event("_max", MetricKind::Gauge, v, None)));
    events
}

fn exponential_events(p: &Point<'_>, h: &ExponentialHistogramDataPoint, is_delta: bool) -> Vec<Event> {
    let kind = if is_delta { MetricKind::Counter } else { MetricKind::Gauge };
    let base = 2f64.powf(2f64.powi(-h.scale));
    // (upper bound, count) of every bucket: negative buckets (their upper bound is the
    // smaller magnitude), the zero bucket, then positive buckets.
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    if let Some(negative) = &h.negative {
        for (i, count) in negative.bucket_counts.iter().enumerate() {
            buckets.push((-base.powi(negative.offset + i as i32), *count));
        }
    }
    buckets.push((h.zero_threshold, h.zero_count));
    if let Some(positive) = &h.positive {
        for (i, count) in positive.bucket_counts.iter().enumerate() {
            buckets.push((base.powi(positive.offset + i as i32 + 1), *count));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut events = vec![p.event("_count", kind, h.count as f64, None)];
    if let Some(sum) = h.sum {
        events.push(p.event("_sum", if sum >= 0.0 { kind } else { MetricKind::Gauge }, sum, None));
    }
    let mut cumulative = 0u64;
    for (bound, count) in buckets {
        cumulative += count;
        if count > 0 {
            events.push(p.event("_bucket", kind, cumulative as f64, Some(("le", le(bound)))));
        }
    }
    events.push(p.event("_bucket", kind, h.count as f64, Some(("le", le(f64::INFINITY)))));
    events.extend(h.min.map(|v| p.event("_min", MetricKind::Gauge, v, None)));
    events.extend(h.max.map(|v| p.event("_max", MetricKind::Gauge, v, None)));
    events
}

fn summary_events(p: &Point<'_>, s: &SummaryDataPoint) -> Vec<Event> {
    let mut events: Vec<Event> = s
        .quantile_values
        .iter()
        .map(|q| p.event("", MetricKind::Gauge, q.value, Some(("quantile", format!("{}", q.quantile)))))
        .collect();
    events.push(p.event("_count", MetricKind::Gauge, s.count as f64, None));
    events.push(p.event("_sum", MetricKind::Gauge, s.sum, None));
    events
}

/// Converts each data point of `points`, keeping the rejected ones (for the dead letters).
fn each<T: Clone>(
    points: &[T],
    out: &mut Decoded<ExportMetricsServiceRequest>,
    mut convert: impl FnMut(&T) -> Result<Vec<Event>, String>,
) -> Vec<T> {
    let mut rejected = Vec::new();
    for point in points {
        match convert(point) {
            Ok(events) => {
                out.accepted += 1;
                out.events.extend(events);
            }
            Err(reason) => {
                out.reject(reason);
                rejected.push(point.clone());
            }
        }
    }
    rejected
}

/// The metric events of one metric; the metric with only its rejected points, if any.
fn metric_events(
    metric: &OtlpMetric,
    service: &str,
    out: &mut Decoded<ExportMetricsServiceRequest>,
) -> Option<OtlpMetric> {
    let point = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], time: u64, flags: u32| Point {
        metric,
        service,
        labels: attributes(attrs),
        time_unix_nano: time,
        flags,
    };
    let rejected_data = match &metric.data {
        None => {
            out.reject(format!("metric {:?} has no data", metric.name));
            return Some(metric.clone());
        }
        Some(Data::Gauge(g)) => {
            let rejected = each(&g.data_points, out, |d| {
                let p = point(&d.attributes, d.time_unix_nano, d.flags);
                p.check(vec![p.event("", MetricKind::Gauge, number(d), None)])
            });
            Data::Gauge(opentelemetry_proto::tonic::metrics::v1::Gauge { data_points: rejected })
        }
        Some(Data::Sum(s)) => {
            let kind = if s.is_monotonic && delta(s.aggregation_temporality) {
                MetricKind::Counter
            } else {
                MetricKind::Gauge
            };
            let rejected = each(&s.data_points, out, |d| {
                let p = point(&d.attributes, d.time_unix_nano, d.flags);
                p.check(vec![p.event("", kind, number(d), None)])
            });
            Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum { data_points: rejected, ..s.clone() })
        }
        Some(Data::Histogram(h)) => {
            let is_delta = delta(h.aggregation_temporality);
            let rejected = each(&h.data_points, out, |d| {
                let p = point(&d.attributes, d.time_unix_nano, d.flags);
                p.check(histogram_events(&p, d, is_delta))
            });
            Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram { data_points: rejected, ..h.clone() })
        }
        Some(Data::ExponentialHistogram(h)) => {
            let is_delta = delta(h.aggregation_temporality);
            let rejected = each(&h.data_points, out, |d| {
                let p = point(&d.attributes, d.time_unix_nano, d.flags);
                p.check(exponential_events(&p, d, is_delta))
            });
            Data::ExponentialHistogram(opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: rejected,
                ..h.clone()
            })
        }
        Some(Data::Summary(s)) => {
            let rejected = each(&s.data_points, out, |d| {
                let p = point(&d.attributes, d.time_unix_nano, d.flags);
                p.check(summary_events(&p, d))
            });
            Data::Summary(opentelemetry_proto::tonic::metrics::v1::Summary { data_points: rejected })
        }
    };
    let any_rejected = match &rejected_data {
        Data::Gauge(g) => !g.data_points.is_empty(),
        Data::Sum(s) => !s.data_points.is_empty(),
        Data::Histogram(h) => !h.data_points.is_empty(),
        Data::ExponentialHistogram(h) => !h.data_points.is_empty(),
        Data::Summary(s) => !s.data_points.is_empty(),
    };
    any_rejected.then(|| OtlpMetric { data: Some(rejected_data), ..metric.clone() })
}

/// The metric events of a request; invalid data points are rejected (see [`Decoded`]).
pub fn convert(request: ExportMetricsServiceRequest) -> Decoded<ExportMetricsServiceRequest> {
    let mut out = Decoded::default();
    let mut rejected_resources = Vec::new();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = service_name(&resource);
        let mut rejected_scopes = Vec::new();
        for scope_metrics in &resource_metrics.scope_metrics {
            let rejected: Vec<OtlpMetric> =
                scope_metrics.metrics.iter().filter_map(|m| metric_events(m, &service, &mut out)).collect();
            if !rejected.is_empty() {
                rejected_scopes.push(ScopeMetrics { metrics: rejected, ..scope_metrics.clone() });
            }
        }
        if !rejected_scopes.is_empty() {
            rejected_resources.push(ResourceMetrics { scope_metrics: rejected_scopes, ..resource_metrics });
        }
    }
    if !rejected_resources.is_empty() {
        out.rejected_request = Some(ExportMetricsServiceRequest { resource_metrics: rejected_resources });
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Histogram, Sum, Summary, summary_data_point};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    use super::*;

    const T: u64 = 1_700_000_000_000_000_000;

    fn attrs() -> Vec<KeyValue> {
        vec![KeyValue {
            key: "region".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("north".into())) }),
        }]
    }

    fn number_point(v: f64, time: u64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs(),
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<OtlpMetric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue("asr".into())) }),
                    }],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                schema_url: String::new(),
            }],
        }
    }

    fn metric(name: &str, data: Data) -> OtlpMetric {
        OtlpMetric { name: name.into(), unit: "ms".into(), data: Some(data), ..Default::default() }
    }

    fn metrics(events: &[Event]) -> Vec<(String, MetricKind, f64, Labels)> {
        events
            .iter()
            .map(|e| match e {
                Event::Metric(m) => (m.name.clone(), m.kind, m.value, m.labels.clone()),
                other => panic!("not a metric: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn gauges_and_sums_by_temporality() {
        let decoded = convert(request(vec![
            metric("queue_length", Data::Gauge(Gauge { data_points: vec![number_point(7.0, T)] })),
            metric(
                "calls",
                Data::Sum(Sum {
                    data_points: vec![number_point(3.0, T)],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                }),
            ),
            metric(
                "calls_total",
                Data::Sum(Sum {
                    data_points: vec![number_point(1200.0, T)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            ),
        ]));
        let m = metrics(&decoded.events);
        assert_eq!(m[0].0, "queue_length");
        assert_eq!((m[0].1, m[0].2), (MetricKind::Gauge, 7.0));
        assert_eq!((m[1].1, m[1].2), (MetricKind::Counter, 3.0), "a delta sum is an increment");
        assert_eq!((m[2].1, m[2].2), (MetricKind::Gauge, 1200.0), "a cumulative total stays as reported");
        assert_eq!(m[0].3["region"], "north");
        let Event::Metric(first) = &decoded.events[0] else { unreachable!() };
        assert_eq!(
            (first.service.as_str(), first.timestamp_ms, first.unit.as_deref()),
            ("asr", 1_700_000_000_000, Some("ms"))
        );
    }

    #[test]
    fn histograms_and_summaries_become_prometheus_series() {
        let histogram = HistogramDataPoint {
            attributes: attrs(),
            time_unix_nano: T,
            count: 6,
            sum: Some(900.0),
            bucket_counts: vec![1, 3, 2],
            explicit_bounds: vec![100.0, 250.0],
            min: Some(40.0),
            max: Some(400.0),
            ..Default::default()
        };
        let summary = SummaryDataPoint {
            attributes: attrs(),
            time_unix_nano: T,
            count: 10,
            sum: 55.0,
            quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.95, value: 9.5 }],
            ..Default::default()
        };
        let decoded = convert(request(vec![
            metric(
                "asr_latency",
                Data::Histogram(Histogram {
                    data_points: vec![histogram],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            ),
            metric("rtt", Data::Summary(Summary { data_points: vec![summary] })),
        ]));
        let m = metrics(&decoded.events);
        let names: Vec<_> = m.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "asr_latency_count",
                "asr_latency_sum",
                "asr_latency_bucket",
                "asr_latency_bucket",
                "asr_latency_bucket",
                "asr_latency_min",
                "asr_latency_max",
                "rtt",
                "rtt_count",
                "rtt_sum"
            ]
        );
        let buckets: Vec<_> = m[2..5].iter().map(|x| (x.3["le"].clone(), x.2)).collect();
        assert_eq!(buckets, [("100".to_string(), 1.0), ("250".to_string(), 4.0), ("+Inf".to_string(), 6.0)]);
        assert_eq!(m[2].1, MetricKind::Counter);
        assert_eq!((m[7].3["quantile"].as_str(), m[7].2), ("0.95", 9.5));
    }

    #[test]
    fn bad_points_are_rejected_and_the_rest_kept() {
        let decoded = convert(request(vec![metric(
            "queue_length",
            Data::Gauge(Gauge {
                data_points: vec![number_point(1.0, T), number_point(2.0, 0), number_point(f64::NAN, T)],
            }),
        )]));
        assert_eq!((decoded.events.len(), decoded.rejected), (1, 2));
        let rejected = decoded.rejected_request.expect("rejected");
        let Some(Data::Gauge(g)) = &rejected.resource_metrics[0].scope_metrics[0].metrics[0].data else { panic!() };
        assert_eq!(g.data_points.len(), 2);
        let bytes = request(vec![]).encode_to_vec();
        assert!(
            decode(&bytes, OtlpEncoding::Proto).is_err()
                || decode(&bytes, OtlpEncoding::Proto).is_ok_and(|d| d.events.is_empty())
        );
    }
}
