//! `GET /monitoring/tracing/traces`: trace search.
//!
//! Parameters: `service`, `operation`, `kind` (`server|client|internal|producer|consumer`),
//! `attr=key=value` (any number; a span or its resource carries it), `errors=true` (only
//! spans with an error status), `min_duration` / `max_duration` (a span's duration: `1.2ms`,
//! `250us`, `2s`), `start` / `end` (see [`crate::time_params`]; default the last hour),
//! `limit` (1–1000, default 20) and `order` (`newest` (default), `oldest`, `longest`,
//! `shortest`, by trace start or trace duration).
//!
//! A trace matches when one of its spans meets every condition. The answer holds one
//! summary per trace: root service and operation (the span without a parent, else the
//! earliest), start, duration, span and error counts, and the services with their span and
//! error counts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use datafusion::common::JoinType;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::lit;
use datafusion::prelude::{Expr, col, in_list};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::json_rows::column_values;
use crate::series_query::date_of;
use crate::time_params::{parse_duration_us, parse_time};

/// Most traces one search answers.
pub const MAX_LIMIT: usize = 1000;
/// How far outside the searched range the other spans of a matching trace are looked for.
const TRACE_SLACK_US: i64 = 3600 * 1_000_000;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Newest,
    Oldest,
    Longest,
    Shortest,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct TraceSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub kind: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub errors_only: bool,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    /// Unix microseconds, `[start, end)`.
    pub start_us: i64,
    pub end_us: i64,
    pub limit: usize,
    pub order: Order,
}

impl TraceSearch {
    pub fn parse(params: Vec<(String, String)>, now_ms: i64) -> ApiResult<TraceSearch> {
        let mut search = TraceSearch {
            service: None,
            operation: None,
            kind: None,
            attributes: Vec::new(),
            errors_only: false,
            min_duration_us: None,
            max_duration_us: None,
            start_us: 0,
            end_us: 0,
            limit: 20,
            order: Order::Newest,
        };
        let (mut start, mut end) = (None, None);
        for (k, v) in params {
            match k.as_str() {
                "service" => search.service = Some(v).filter(|s| !s.is_empty()),
                "operation" => search.operation = Some(v).filter(|s| !s.is_empty()),
                "kind" => {
                    if callscope_schemas::SpanKind::parse(&v).is_none() {
                        return Err(ApiError::bad_field(
                            "kind",
                            format!("unknown span kind {v:?}; use server, client, internal, producer or consumer"),
                        ));
                    }
                    search.kind = Some(v);
                }
                "attr" => {
                    let (key, value) = v
                        .split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| ApiError::bad_field("attr", format!("attr={v:?}: use attr=key=value")))?;
                    search.attributes.push((key.to_string(), value.to_string()));
                }
                "errors" => {
                    search.errors_only = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" | "" => false,
                        _ => return Err(ApiError::bad_field("errors", "use errors=true or errors=false")),
                    }
                }
                "min_duration" => search.min_duration_us = Some(parse_duration_us("min_duration", &v)?),
                "max_duration" => search.max_duration_us = Some(parse_duration_us("max_duration", &v)?),
                "start" => start = Some(parse_time("start", &v, now_ms)?),
                "end" => end = Some(parse_time("end", &v, now_ms)?),
                "limit" => {
                    search.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| ApiError::bad_field("limit", format!("limit must be 1 to {MAX_LIMIT}")))?;
                }
                "order" => {
                    search.order = match v.as_str() {
                        "newest" | "" => Order::Newest,
                        "oldest" => Order::Oldest,
                        "longest" => Order::Longest,
                        "shortest" => Order::Shortest,
                        _ => {
                            return Err(ApiError::bad_field("order", "use newest, oldest, longest or shortest"));
                        }
                    }
                }
                other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
            }
        }
        let end = end.unwrap_or(now_ms);
        let start = start.unwrap_or(end - 3_600_000);
        if start >= end {
            return Err(ApiError::bad_field("start", "start must be before end"));
        }
        if let (Some(lo), Some(hi)) = (search.min_duration_us, search.max_duration_us)
            && lo > hi
        {
            return Err(ApiError::bad_field("min_duration", "min_duration must not exceed max_duration"));
        }
        // Times are bounded to the years 1–9999 by the parser: in microseconds they fit.
        (search.start_us, search.end_us) = (start * 1000, end * 1000);
        Ok(search)
    }

    /// The conditions one span must meet.
    fn span_filter(&self) -> Expr {
        let mut f = spans_starting_in(self.start_us, self.end_us);
        if let Some(s) = &self.service {
            f = f.and(col("service").eq(lit(s.clone())));
        }
        if let Some(o) = &self.operation {
            f = f.and(col("operation").eq(lit(o.clone())));
        }
        if let Some(k) = &self.kind {
            f = f.and(col("kind").eq(lit(k.clone())));
        }
        for (k, v) in &self.attributes {
            f = f.and(
                get_field(col("attributes"), k.as_str()).eq(lit(v.clone())).or(get_field(
                    col("resource_attributes"),
                    k.as_str(),
                )
                .eq(lit(v.clone()))),
            );
        }
        if self.errors_only {
            f = f.and(col("status").eq(lit("error")));
        }
        if let Some(lo) = self.min_duration_us {
            f = f.and(col("duration_us").gt_eq(lit(lo)));
        }
        if let Some(hi) = self.max_duration_us {
            f = f.and(col("duration_us").lt_eq(lit(hi)));
        }
        f
    }
}

/// Spans starting in `[from_us, to_us)` (unix µs), with the `date` partitions of that range,
/// so that only those directories are listed.
pub(crate) fn spans_starting_in(from_us: i64, to_us: i64) -> Expr {
    col("start_time_us")
        .gt_eq(lit(from_us))
        .and(col("start_time_us").lt(lit(to_us)))
        .and(col("date").gt_eq(lit(date_of(from_us.div_euclid(1000)))))
        .and(col("date").lt_eq(lit(date_of(to_us.div_euclid(1000)))))
}

/// Matching traces up to this many are summed up straight from their spans (found by id,
/// which the compacted files' trace-id sort and bloom filter make cheap); past it, the
/// newest-first order prunes by the matching spans' starts ([`newest`]) and the other
/// orders let SQL narrow them to the `limit` asked for.
const DIRECT_LIMIT: usize = 10_000;

/// Runs a search; returns the trace summaries in the asked order.
pub async fn search(state: &AppState, q: &TraceSearch) -> ApiResult<Vec<Value>> {
    search_with(state, q, DIRECT_LIMIT).await
}

async fn search_with(state: &AppState, q: &TraceSearch, direct_limit: usize) -> ApiResult<Vec<Value>> {
    let session = state.engine.session();
    let spans = session.table("spans").await?;
    let around = spans_starting_in(q.start_us.saturating_sub(TRACE_SLACK_US), q.end_us.saturating_add(TRACE_SLACK_US));
    // The traces with a matching span, with the start of their first matching span: no
    // trace starts later than that.
    let matched = spans
        .clone()
        .filter(q.span_filter())?
        .aggregate(vec![col("trace_id")], vec![min(col("start_time_us")).alias("first_match")])?;
    let mut found: Vec<(String, i64)> = Vec::new();
    for batch in matched.collect().await? {
        let ids = column_values(batch.column(0).as_ref());
        let firsts = column_values(batch.column(1).as_ref());
        found.extend(
            ids.into_iter()
                .zip(firsts)
                .filter_map(|(id, first)| Some((id.as_str()?.to_string(), first.as_i64().unwrap_or(i64::MAX)))),
        );
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let traces = if found.len() <= direct_limit {
        summaries(state, &around, found.into_iter().map(|(id, _)| id).collect()).await?
    } else if matches!(q.order, Order::Newest) {
        newest(state, &around, found, q.limit).await?
    } else {
        let ids = top_traces(state, q, &around, found.len()).await?;
        summaries(state, &around, ids).await?
    };
    let mut traces: Vec<(String, Summary)> = traces.into_iter().collect();
    let key = |s: &Summary| match q.order {
        Order::Newest => -s.start,
        Order::Oldest => s.start,
        Order::Longest => -(s.end - s.start),
        Order::Shortest => s.end - s.start,
    };
    traces.sort_by(|(a_id, a), (b_id, b)| key(a).cmp(&key(b)).then_with(|| a_id.cmp(b_id)));
    traces.truncate(q.limit);
    Ok(traces.into_iter().map(|(trace_id, s)| s.to_json(&trace_id)).collect())
}

/// Every span of the traces `ids`, summed up per trace.
async fn summaries(state: &AppState, around: &Expr, ids: Vec<String>) -> ApiResult<BTreeMap<String, Summary>> {
    let ids: Vec<Expr> = ids.into_iter().map(lit).collect();
    let detail = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(around.clone().and(in_list(col("trace_id"), ids, false)))?
        .select(
            ["trace_id", "parent_span_id", "service", "operation", "start_time_us", "duration_us", "status"]
                .into_iter()
                .map(col)
                .collect::<Vec<_>>(),
        )?;
    let mut traces: BTreeMap<String, Summary> = BTreeMap::new();
    for batch in detail.collect().await? {
        let c: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let text = |i: usize| c[i][row].as_str().unwrap_or_default();
            let int = |i: usize| c[i][row].as_i64().unwrap_or(0);
            traces.entry(text(0).to_string()).or_insert_with(Summary::new).add(
                c[1][row].is_null(),
                text(2),
                text(3),
                int(4),
                int(5),
                text(6) == "error",
            );
        }
    }
    Ok(traces)
}

/// Newest first, of many matched traces: a trace starts no later than its first matching
/// span (`found`'s bound), so the `limit` traces with the latest bounds are summed up
/// first, then only the others whose bound reaches the `limit`-th newest start among them
/// (they alone could still be newer). Exact, and reads the spans of a few traces.
async fn newest(
    state: &AppState,
    around: &Expr,
    mut found: Vec<(String, i64)>,
    limit: usize,
) -> ApiResult<BTreeMap<String, Summary>> {
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let first: Vec<String> = found.iter().take(limit).map(|(id, _)| id.clone()).collect();
    let mut traces = summaries(state, around, first).await?;
    let mut starts: Vec<i64> = traces.values().map(|s| s.start).collect();
    starts.sort_unstable_by(|a, b| b.cmp(a));
    let threshold = starts.get(limit.saturating_sub(1)).copied().unwrap_or(i64::MIN);
    let more: Vec<String> =
        found.iter().skip(limit).take_while(|(_, bound)| *bound >= threshold).map(|(id, _)| id.clone()).collect();
    if !more.is_empty() {
        traces.extend(summaries(state, around, more).await?);
    }
    Ok(traces)
}

/// Of `matched` (more than [`DIRECT_LIMIT`]) traces, the `limit` first in the asked order,
/// by SQL over every span of the range.
async fn top_traces(state: &AppState, q: &TraceSearch, around: &Expr, matched: usize) -> ApiResult<Vec<String>> {
    let spans = state.engine.session().table("spans").await?;
    let matched_ids =
        spans.clone().filter(q.span_filter())?.aggregate(vec![col("trace_id").alias("matched_trace")], vec![])?;
    let summaries = spans
        .filter(around.clone())?
        .join(matched_ids, JoinType::LeftSemi, &["trace_id"], &["matched_trace"], None)?
        .aggregate(
            vec![col("trace_id")],
            vec![min(col("start_time_us")).alias("start"), max(col("start_time_us") + col("duration_us")).alias("end")],
        )?;
    let duration = col("end") - col("start");
    let mut order = match q.order {
        Order::Newest => vec![col("start").sort(false, false)],
        Order::Oldest => vec![col("start").sort(true, false)],
        Order::Longest => vec![duration.sort(false, false)],
        Order::Shortest => vec![duration.sort(true, false)],
    };
    order.push(col("trace_id").sort(true, false));
    let mut ids = Vec::with_capacity(q.limit.min(matched));
    for batch in summaries.sort(order)?.limit(0, Some(q.limit))?.collect().await? {
        ids.extend(column_values(batch.column(0).as_ref()).into_iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    Ok(ids)
}

/// One trace summed up from its spans.
struct Summary {
    start: i64,
    end: i64,
    spans: i64,
    errors: i64,
    /// (is a root, -start, service, operation) of the best root candidate so far: the span
    /// without a parent, else the earliest.
    root: Option<(bool, i64, String, String)>,
    services: BTreeMap<String, (i64, i64)>,
}

impl Summary {
    fn new() -> Summary {
        Summary { start: i64::MAX, end: i64::MIN, spans: 0, errors: 0, root: None, services: BTreeMap::new() }
    }

    fn add(&mut self, is_root: bool, service: &str, operation: &str, start: i64, duration: i64, failed: bool) {
        self.start = self.start.min(start);
        self.end = self.end.max(start.saturating_add(duration));
        self.spans += 1;
        self.errors += i64::from(failed);
        if self.root.as_ref().is_none_or(|(r, s, _, _)| (is_root, -start) > (*r, *s)) {
            self.root = Some((is_root, -start, service.to_string(), operation.to_string()));
        }
        let entry = self.services.entry(service.to_string()).or_default();
        entry.0 += 1;
        entry.1 += i64::from(failed);
    }

    fn to_json(&self, trace_id: &str) -> Value {
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|(name, (n, e))| json!({"name": name, "span_count": n, "error_count": e}))
            .collect();
        json!({
            "trace_id": trace_id,
            "root_service": self.root.as_ref().map(|r| r.2.clone()),
            "root_operation": self.root.as_ref().map(|r| r.3.clone()),
            "start_time_us": self.start,
            "duration_us": self.end - self.start,
            "span_count": self.spans,
            "error_count": self.errors,
            "services": services,
        })
    }
}

/// `GET /monitoring/tracing/traces`.
pub async fn get_traces(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let q = TraceSearch::parse(params, callscope_runtime::now_ms())?;
    let traces = search(&state, &q).await?;
    Ok(Json(json!({
        "start_time_us": q.start_us,
        "end_time_us": q.end_us,
        "count": traces.len(),
        "traces": traces,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Both ways of choosing the traces (straight from their spans, or SQL narrowing many
    /// matches first) give the same answer in every order.
    #[tokio::test]
    async fn many_matches_are_narrowed_to_the_same_answer() {
        use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
        use callscope_schemas::{Dataset, Event, Span, SpanKind, SpanStatus};
        use callscope_storage::{DataFileKey, HourPartition, Tiers, parquet_file};
        let dir = tempfile::tempdir().expect("tempdir");
        let tiers = Tiers::local(dir.path()).expect("tiers");
        let now_us = 1_795_917_220_000_000i64;
        let mut events = Vec::new();
        for t in 0..40i64 {
            for s in 0..3i64 {
                let span = Span {
                    trace_id: format!("{t:032x}"),
                    span_id: format!("{s:016x}"),
                    parent_span_id: (s > 0).then(|| format!("{:016x}", 0)),
                    service: ["gateway", "asr", "ai"][s as usize].into(),
                    operation: "op".into(),
                    kind: SpanKind::Server,
                    // The matching (asr) spans start up to 64 s into their trace, so the
                    // traces' order by first match is not their order by start.
                    start_time_us: now_us - 600_000_000
                        + t * 7_000_000
                        + if s == 1 { (t * 13 % 9) * 8_000_000 } else { s * 1000 },
                    duration_us: 1000 + (t * 37 % 11) * 1000 - s * 10,
                    status: if t % 5 == 0 && s == 1 { SpanStatus::Error } else { SpanStatus::Ok },
                    attributes: Default::default(),
                    status_message: None,
                    resource_attributes: Default::default(),
                    events: vec![],
                };
                events.push(SourcedEvent { partition: 0, offset: t * 3 + s, event: Event::Span(span) });
            }
        }
        let by_hour = |e: &SourcedEvent| HourPartition::of_unix_ms(e.event.event_time_ms());
        let mut hours: BTreeMap<HourPartition, Vec<&SourcedEvent>> = BTreeMap::new();
        for e in &events {
            hours.entry(by_hour(e)).or_default().push(e);
        }
        for (i, (hour, rows)) in hours.into_iter().enumerate() {
            let key = DataFileKey {
                dataset: Dataset::Spans,
                hour,
                topic: "t".into(),
                partition: 0,
                first_offset: i as i64,
                last_offset: i as i64,
            };
            let bytes = parquet_file::encode(&[to_record_batch(Dataset::Spans, rows).expect("batch")]).expect("encode");
            tiers.hot.put_durable(&key.path(), bytes, false).await.expect("put");
        }
        let state = crate::route_tests::test_state(tiers, 0);
        for order in ["newest", "oldest", "longest", "shortest"] {
            let q = TraceSearch::parse(
                params(&[("service", "asr"), ("limit", "7"), ("order", order), ("start", "now-1h")]),
                now_us / 1000,
            )
            .expect("valid");
            let direct = search_with(&state, &q, DIRECT_LIMIT).await.expect("direct");
            let narrowed = search_with(&state, &q, 0).await.expect("narrowed");
            assert_eq!(direct.len(), 7, "{order}");
            assert_eq!(direct, narrowed, "{order}");
            assert_eq!(direct[0]["span_count"], 3);
            assert_eq!(direct[0]["root_service"], "gateway");
        }
    }

    #[test]
    fn searches_parse_and_bad_parameters_are_named() {
        let q = TraceSearch::parse(
            params(&[("service", "asr"), ("attr", "region=north"), ("attr", "a=b=c"), ("min_duration", "1.5ms")]),
            1_700_000_000_000,
        )
        .expect("valid");
        assert_eq!(q.attributes, vec![("region".into(), "north".into()), ("a".into(), "b=c".into())]);
        assert_eq!(q.min_duration_us, Some(1500));
        assert_eq!((q.end_us - q.start_us), 3_600_000_000);
        let field = |p: &[(&str, &str)]| match TraceSearch::parse(params(p), 0) {
            Err(ApiError::BadRequest { field: Some(f), .. }) => f,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field(&[("kind", "sideways")]), "kind");
        assert_eq!(field(&[("attr", "novalue")]), "attr");
        assert_eq!(field(&[("limit", "0")]), "limit");
        assert_eq!(field(&[("limit", "100000")]), "limit");
        assert_eq!(field(&[("min_duration", "2s"), ("max_duration", "1s")]), "min_duration");
        assert_eq!(field(&[("order", "random")]), "order");
        assert_eq!(field(&[("color", "red")]), "color");
    }
}
