//! `GET /monitoring/metrics/prometheus`: the Prometheus text exposition format 0.0.4 with
//! the latest closed-window value of every business metric (built-in and custom
//! definitions; ratios and other values as gauges, histogram and summary definitions as
//! summaries with p50/p90/p95/p99, `_sum` and `_count`) followed by callscope's own
//! metrics from this process's registry (pipeline counters, consumer lag, windows, late
//! events, active series, write latency when the workers run in this process).
//!
//! "Latest closed window": windows of one minute (or the finest roll-up resolution when
//! one minute is not configured) that ended before the roll-ups settled (allowed
//! lateness + idle timeout); the newest such window with data in the last ten minutes.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use callscope_schemas::MetricKind;
use callscope_schemas::custom_metrics::Aggregate;
use callscope_schemas::text_formats::go_float as format_value;
use callscope_storage::CustomMetricStore;

use crate::AppState;
use crate::derived::{Grouped, evaluate};
use crate::error::{ApiError, ApiResult};
use crate::series_query::{Agg, SeriesQuery};

const LOOKBACK_MS: i64 = 10 * 60_000;

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels_text(names: &[String], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> =
        names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape_value(v))).collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// The newest value per group.
fn latest(grouped: Grouped) -> BTreeMap<Vec<String>, f64> {
    grouped.into_iter().filter_map(|(group, points)| Some((group, *points.last_key_value()?.1))).collect()
}

async fn business_metrics(state: &AppState, out: &mut String) -> ApiResult<()> {
    let definitions = CustomMetricStore::new(state.hot.clone())
        .effective()
        .await
        .map_err(|e| ApiError::Unavailable(format!("definition store: {e}")))?;
    let window = if state.resolutions_ms.contains(&60_000) || state.resolutions_ms.is_empty() {
        60_000
    } else {
        state.resolutions_ms[0]
    };
    let settled = chrono::Utc::now().timestamp_millis() - state.rollups_settled_after_ms;
    let end = settled.div_euclid(window) * window;
    let q = SeriesQuery {
        name: String::new(),
        service: None,
        labels: Vec::new(),
        start: end - LOOKBACK_MS,
        end,
        step: window,
        agg: Agg::Sum,
        resolution: None,
        agg_given: false,
    };
    for def in &definitions {
        if def.validate().is_err() {
            continue;
        }
        let summary = matches!(def.kind, MetricKind::Histogram | MetricKind::Summary) && def.rule.source.is_some();
        let unit = def.unit.as_deref().map(|u| format!(" (unit: {u})")).unwrap_or_default();
        let _ = writeln!(out, "# HELP {} {}{}", def.name, escape_help(&def.help), escape_help(&unit));
        if summary {
            let _ = writeln!(out, "# TYPE {} summary", def.name);
            for (quantile, agg) in
                [("0.5", Aggregate::P50), ("0.9", Aggregate::P90), ("0.95", Aggregate::P95), ("0.99", Aggregate::P99)]
            {
                let values =
                    latest(evaluate(state, &definitions, def, &q, Some(crate::derived::agg_of(agg)), 0).await?);
                for (group, v) in values {
                    let _ = writeln!(
                        out,
                        "{}{} {}",
                        def.name,
                        labels_text(&def.labels, &group, Some(("quantile", quantile))),
                        format_value(v)
                    );
                }
            }
            for (suffix, agg) in [("sum", Agg::Sum), ("count", Agg::Count)] {
                let values = latest(evaluate(state, &definitions, def, &q, Some(agg), 0).await?);
                for (group, v) in values {
                    let _ = writeln!(
                        out,
                        "{}_{suffix}{} {}",
                        def.name,
                        labels_text(&def.labels, &group, None),
                        format_value(v)
                    );
                }
            }
        } else {
            let _ = writeln!(out, "# TYPE {} gauge", def.name);
            let values = latest(evaluate(state, &definitions, def, &q, None, 0).await?);
            for (group, v) in values {
                let _ = writeln!(out, "{}{} {}", def.name, labels_text(&def.labels, &group, None), format_value(v));
            }
        }
    }
    Ok(())
}

/// This process's own metrics, leaving out any family a business metric already named.
fn own_metrics(skip: &[String]) -> String {
    let families: Vec<_> =
        prometheus::default_registry().gather().into_iter().filter(|f| !skip.contains(&f.name().to_string())).collect();
    let mut body = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut body) {
        tracing::warn!(error = %e, "cannot encode own metrics");
    }
    body
}

pub async fn exposition(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut body = String::new();
    business_metrics(&state, &mut body).await?;
    let names: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    body.push_str(&own_metrics(&names));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let names = vec!["region".to_string()];
        assert_eq!(labels_text(&names, &["a\"b\\c\n".to_string()], None), r#"{region="a\"b\\c\n"}"#);
        assert_eq!(labels_text(&[], &[], Some(("quantile", "0.5"))), r#"{quantile="0.5"}"#);
        assert_eq!(labels_text(&[], &[], None), "");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
    }

    #[test]
    fn the_newest_value_per_group_wins() {
        let mut g = Grouped::new();
        g.entry(vec!["a".into()]).or_default().insert(120_000, 2.0);
        g.entry(vec!["a".into()]).or_default().insert(60_000, 1.0);
        g.entry(vec!["b".into()]).or_default().insert(60_000, 3.0);
        let l = latest(g);
        assert_eq!(l[&vec!["a".to_string()]], 2.0);
        assert_eq!(l[&vec!["b".to_string()]], 3.0);
    }
}
