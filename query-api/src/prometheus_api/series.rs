//! Series, label names and values, and metadata for the Prometheus API: the distinct series
//! (`__name__`, `service`, labels) of the raw samples in the range (default the last 6
//! hours), filtered by the `match[]` selectors.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use callscope_schemas::promql::eval::LabelSet;
use callscope_schemas::rollup::ROLLUP_TABLE;
use datafusion::prelude::{Expr, cast, col, lit};
use promql_parser::label::{METRIC_NAME, MatchOp, Matchers};
use promql_parser::parser::Expr as PromExpr;
use serde_json::{Value, json};

use super::{Params, PromError};
use crate::AppState;
use crate::series_query::date_of;

/// The default range of series, label and metadata requests.
const DEFAULT_RANGE_MS: i64 = 6 * 3_600_000;

fn selectors(params: &Params) -> Result<Vec<Matchers>, PromError> {
    params
        .all("match[]")
        .into_iter()
        .map(|text| match promql_parser::parser::parse(text) {
            Ok(PromExpr::VectorSelector(vs)) => {
                let mut matchers = vs.matchers.clone();
                if let Some(name) = &vs.name {
                    matchers.matchers.push(promql_parser::label::Matcher::new(MatchOp::Equal, METRIC_NAME, name));
                }
                Ok(matchers)
            }
            Ok(_) => {
                Err(PromError::bad_data(format!("invalid parameter \"match[]\": {text:?} is not a series selector")))
            }
            Err(e) => Err(PromError::bad_data(format!("invalid parameter \"match[]\": {e}"))),
        })
        .collect()
}

fn matches(matchers: &Matchers, labels: &LabelSet) -> bool {
    matchers.matchers.iter().all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
        && (matchers.or_matchers.is_empty()
            || matchers
                .or_matchers
                .iter()
                .any(|group| group.iter().all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))))
}

fn utf8(c: &str) -> Expr {
    cast(col(c), DataType::Utf8).alias(c)
}

/// The series in the request's range that match any `match[]` (all series without one).
pub async fn matching(state: &AppState, params: &Params) -> Result<Vec<LabelSet>, PromError> {
    let selectors = selectors(params)?;
    let now = callscope_runtime::now_ms();
    let end = params.time("end", now)?;
    let start = params.time("start", end - DEFAULT_RANGE_MS)?;
    if end < start {
        return Err(PromError::bad_data("end timestamp must not be before start time"));
    }
    // Exact names narrow the scan when every selector has one.
    let names: Option<Vec<String>> = selectors
        .iter()
        .map(|m| {
            m.matchers.iter().find(|x| x.name == METRIC_NAME && matches!(x.op, MatchOp::Equal)).map(|x| x.value.clone())
        })
        .collect();
    let mut filter = col("timestamp_ms")
        .gt_eq(lit(start))
        .and(col("timestamp_ms").lt_eq(lit(end)))
        .and(col("date").gt_eq(lit(date_of(start))))
        .and(col("date").lt_eq(lit(date_of(end))));
    if let Some(names) = names.filter(|n| !n.is_empty()) {
        filter = filter.and(col("name").in_list(names.into_iter().map(lit).collect(), false));
    }
    let df = state
        .engine
        .session()
        .table("metrics")
        .await?
        .filter(filter)?
        .aggregate(vec![utf8("name"), utf8("service"), utf8("labels_key")], vec![])?;
    let mut out = Vec::new();
    for batch in df.collect().await? {
        let (name, service, labels) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
            batch.column(2).as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            let mut set: LabelSet = serde_json::from_str(labels.value(i)).unwrap_or_default();
            set.insert("service".into(), service.value(i).to_string());
            set.insert(METRIC_NAME.into(), name.value(i).to_string());
            if selectors.is_empty() || selectors.iter().any(|m| matches(m, &set)) {
                out.push(set);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Type and unit per metric name, from the roll-ups of the last 7 days and the raw samples
/// of the default range.
pub async fn metadata(state: &AppState, metric: Option<&str>, limit: Option<&str>) -> Result<Value, PromError> {
    let limit = match limit {
        None | Some("") => usize::MAX,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n as usize,
            Ok(_) => usize::MAX,
            Err(_) => return Err(PromError::bad_data(format!("invalid parameter \"limit\": {text:?}"))),
        },
    };
    let now = callscope_runtime::now_ms();
    let mut found: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (table, time, from) in
        [(ROLLUP_TABLE, "window_start_ms", now - 7 * 86_400_000), ("metrics", "timestamp_ms", now - DEFAULT_RANGE_MS)]
    {
        let mut filter = col(time).gt_eq(lit(from)).and(col("date").gt_eq(lit(date_of(from))));
        if let Some(m) = metric {
            filter = filter.and(col("name").eq(lit(m.to_string())));
        }
        let df = state
            .engine
            .session()
            .table(table)
            .await?
            .filter(filter)?
            .aggregate(vec![utf8("name"), utf8("kind"), utf8("unit")], vec![])?;
        for batch in df.collect().await? {
            let (name, kind, unit) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                let unit = (!unit.is_null(i)).then(|| unit.value(i).to_string());
                found.insert(name.value(i).to_string(), (kind.value(i).to_string(), unit));
            }
        }
    }
    Ok(Value::Object(
        found
            .into_iter()
            .take(limit)
            .map(|(name, (kind, unit))| (name, json!([{"type": kind, "help": "", "unit": unit.unwrap_or_default()}])))
            .collect(),
    ))
}
