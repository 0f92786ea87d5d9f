//! Analysis of one trace: the critical path (computed as Jaeger UI computes it), self time
//! per span, service and operation, the top bottlenecks, and the error propagation chain.
//!
//! **Critical path** (jaeger-ui `TracePage/CriticalPath`): consumer children of producer
//! parents are left out (the producer does not wait for them); children wholly outside
//! their parent are dropped and the rest clipped to it, top-down. Then from each root's
//! end, walking back: the child that finished last (before the point reached) is on the
//! path from its end to that point, and the walk continues inside it; with no such child
//! the span itself is on the path back to its start, and the walk returns to its parent
//! at that start. Sections are `{spanID, sectionStart, sectionEnd}` in µs.
//!
//! **Self time**: a span's duration not covered by any of its (clipped) children.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// What the analysis needs of a span.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
}

impl TraceSpan {
    fn end_us(&self) -> i64 {
        self.start_us.saturating_add(self.duration_us)
    }
}

/// One section of the critical path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(rename = "sectionStart")]
    pub section_start: i64,
    #[serde(rename = "sectionEnd")]
    pub section_end: i64,
}

/// Self time of a span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfTime {
    pub span_id: String,
    pub service: String,
    pub operation: String,
    pub duration_us: i64,
    pub self_time_us: i64,
    /// Time of this span on the critical path.
    pub critical_path_us: i64,
}

/// Self time summed per group (service, or service and operation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupTime {
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub spans: usize,
    pub self_time_us: i64,
    pub critical_path_us: i64,
    /// Share of the trace's duration (0–1) spent here on the critical path.
    pub critical_path_share: f64,
}

/// One hop of the error propagation chain (deepest error first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainHop {
    pub span_id: String,
    pub service: String,
    pub operation: String,
    pub error: bool,
}

/// The analysis of a trace.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub duration_us: i64,
    pub critical_path: Vec<Section>,
    pub self_times: Vec<SelfTime>,
    pub by_service: Vec<GroupTime>,
    pub by_operation: Vec<GroupTime>,
    /// The spans with the most critical-path time (at most 5).
    pub bottlenecks: Vec<SelfTime>,
    /// From the deepest error span up to the root; empty without errors.
    pub error_chain: Vec<ChainHop>,
    /// The services the error chain crossed, from the deepest error up.
    pub error_services: Vec<String>,
}

/// Spans after the critical path's preprocessing: children per span (the kept ones, by end
/// time, latest first), each span's clipped `[start, end)`.
struct Tree {
    children: HashMap<usize, Vec<usize>>,
    clipped: Vec<(i64, i64)>,
    roots: Vec<usize>,
    /// Each span's parent in the trace (before any child is dropped).
    parent: Vec<Option<usize>>,
}

fn tree(spans: &[TraceSpan]) -> Tree {
    let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let parent: Vec<Option<usize>> = (0..spans.len())
        .map(|i| spans[i].parent_span_id.as_deref().and_then(|p| index.get(p).copied()).filter(|p| *p != i))
        .collect();
    let mut raw_children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for i in 0..spans.len() {
        match parent[i] {
            Some(p) => raw_children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    roots.sort_by_key(|i| (spans[*i].start_us, spans[*i].span_id.clone()));
    let mut clipped: Vec<(i64, i64)> = spans.iter().map(|s| (s.start_us, s.end_us())).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    // Top-down, so that a child is clipped to its parent's clipped interval.
    let mut stack: Vec<usize> = roots.clone();
    let mut seen = vec![false; spans.len()];
    while let Some(parent) = stack.pop() {
        if std::mem::replace(&mut seen[parent], true) {
            continue;
        }
        let (p_start, p_end) = clipped[parent];
        let mut kept = Vec::new();
        for &child in raw_children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            if spans[parent].kind == "producer" && spans[child].kind == "consumer" {
                continue;
            }
            let (c_start, c_end) = clipped[child];
            if c_end <= p_start || c_start >= p_end {
                continue;
            }
            clipped[child] = (c_start.max(p_start), c_end.min(p_end));
            kept.push(child);
            stack.push(child);
        }
        kept.sort_by(|a, b| clipped[*b].1.cmp(&clipped[*a].1).then(spans[*a].span_id.cmp(&spans[*b].span_id)));
        children.insert(parent, kept);
    }
    Tree { children, clipped, roots, parent }
}

fn critical_path(spans: &[TraceSpan], tree: &Tree) -> Vec<Section> {
    let mut path = Vec::new();
    for &root in &tree.roots {
        // (span, the point reached walking back; None: the span's own end)
        let mut at = Some((root, None::<i64>));
        let mut steps = 0usize;
        while let Some((span, returning)) = at {
            steps += 1;
            if steps > 4 * spans.len() + 4 {
                break;
            }
            let (start, end) = tree.clipped[span];
            let boundary = returning.unwrap_or(end);
            let kids = tree.children.get(&span).map(Vec::as_slice).unwrap_or_default();
            let last = match returning {
                Some(t) => kids.iter().copied().find(|c| tree.clipped[*c].1 < t),
                None => kids.first().copied(),
            };
            match last {
                Some(child) => {
                    let child_end = tree.clipped[child].1;
                    if child_end != boundary {
                        path.push(Section {
                            span_id: spans[span].span_id.clone(),
                            section_start: child_end,
                            section_end: boundary,
                        });
                    }
                    at = Some((child, None));
                }
                None => {
                    if start != boundary {
                        path.push(Section {
                            span_id: spans[span].span_id.clone(),
                            section_start: start,
                            section_end: boundary,
                        });
                    }
                    // The walk only reaches kept spans, whose parent is their parent in the tree.
                    at = tree.parent[span].map(|p| (p, Some(start)));
                }
            }
        }
    }
    path
}

/// Length of the union of `intervals` (clipped to `[start, end)`).
fn covered(mut intervals: Vec<(i64, i64)>, start: i64, end: i64) -> i64 {
    intervals.sort();
    let (mut total, mut reach) = (0i64, start);
    for (s, e) in intervals {
        let (s, e) = (s.max(reach), e.min(end));
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    total
}

fn group(times: &[SelfTime], by_operation: bool, duration: i64) -> Vec<GroupTime> {
    let mut groups: BTreeMap<(String, Option<String>), GroupTime> = BTreeMap::new();
    for t in times {
        let key = (t.service.clone(), by_operation.then(|| t.operation.clone()));
        let g = groups.entry(key.clone()).or_insert(GroupTime {
            service: key.0,
            operation: key.1,
            spans: 0,
            self_time_us: 0,
            critical_path_us: 0,
            critical_path_share: 0.0,
        });
        g.spans += 1;
        g.self_time_us += t.self_time_us;
        g.critical_path_us += t.critical_path_us;
    }
    let mut out: Vec<GroupTime> = groups.into_values().collect();
    for g in &mut out {
        g.critical_path_share = if duration > 0 { g.critical_path_us as f64 / duration as f64 } else { 0.0 };
    }
    out.sort_by(|a, b| b.critical_path_us.cmp(&a.critical_path_us).then(b.self_time_us.cmp(&a.self_time_us)));
    out
}

/// Analyses a trace's spans (any order).
pub fn analyze(spans: &[TraceSpan]) -> Analysis {
    let tree = tree(spans);
    let path = critical_path(spans, &tree);
    let start = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let end = spans.iter().map(TraceSpan::end_us).max().unwrap_or(start);
    let mut on_path: HashMap<&str, i64> = HashMap::new();
    for s in &path {
        *on_path.entry(s.span_id.as_str()).or_default() += s.section_end - s.section_start;
    }
    let self_times: Vec<SelfTime> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let kids = tree.children.get(&i).map(Vec::as_slice).unwrap_or_default();
            let (from, to) = (s.start_us, s.end_us());
            let busy = covered(kids.iter().map(|c| tree.clipped[*c]).collect(), from, to);
            SelfTime {
                span_id: s.span_id.clone(),
                service: s.service.clone(),
                operation: s.operation.clone(),
                duration_us: s.duration_us,
                self_time_us: (to - from - busy).max(0),
                critical_path_us: on_path.get(s.span_id.as_str()).copied().unwrap_or(0),
            }
        })
        .collect();
    let mut bottlenecks = self_times.clone();
    bottlenecks.sort_by(|a, b| {
        b.critical_path_us
            .cmp(&a.critical_path_us)
            .then(b.self_time_us.cmp(&a.self_time_us))
            .then(a.span_id.cmp(&b.span_id))
    });
    bottlenecks.truncate(5);
    bottlenecks.retain(|b| b.critical_path_us > 0 || b.self_time_us > 0);

    // The error chain: from the deepest error span up to its root.
    let parent = |i: usize| tree.parent[i];
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(p) = parent(i) {
            d += 1;
            i = p;
            if d > spans.len() {
                break;
            }
        }
        d
    };
    let deepest = (0..spans.len())
        .filter(|i| spans[*i].error)
        .max_by(|a, b| depth(*a).cmp(&depth(*b)).then(spans[*a].start_us.cmp(&spans[*b].start_us).reverse()));
    let mut error_chain = Vec::new();
    let mut at = deepest;
    while let Some(i) = at {
        error_chain.push(ChainHop {
            span_id: spans[i].span_id.clone(),
            service: spans[i].service.clone(),
            operation: spans[i].operation.clone(),
            error: spans[i].error,
        });
        at = parent(i).filter(|_| error_chain.len() <= spans.len());
    }
    let mut error_services: Vec<String> = Vec::new();
    for hop in &error_chain {
        if error_services.last() != Some(&hop.service) {
            error_services.push(hop.service.clone());
        }
    }
    Analysis {
        duration_us: end - start,
        by_service: group(&self_times, false, end - start),
        by_operation: group(&self_times, true, end - start),
        critical_path: path,
        self_times,
        bottlenecks,
        error_chain,
        error_services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, start: i64, duration: i64) -> TraceSpan {
        TraceSpan {
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            service: service.into(),
            operation: format!("{service}.{id}"),
            kind: "server".into(),
            start_us: start,
            duration_us: duration,
            error: false,
        }
    }

    fn sections(a: &Analysis) -> Vec<(&str, i64, i64)> {
        a.critical_path.iter().map(|s| (s.span_id.as_str(), s.section_start, s.section_end)).collect()
    }

    /// A call: gateway 0–100 calls asr 10–40 and, overlapping, ai 30–90 (which calls the
    /// whitelist 35–49 and the LLM 50–85).
    fn call() -> Vec<TraceSpan> {
        vec![
            span("gw", None, "gateway", 0, 100),
            span("asr", Some("gw"), "asr", 10, 30),
            span("ai", Some("gw"), "ai", 30, 60),
            span("wl", Some("ai"), "whitelist", 35, 14),
            span("llm", Some("ai"), "llm", 50, 35),
        ]
    }

    #[test]
    fn the_critical_path_walks_back_from_the_end_like_jaeger_ui() {
        let a = analyze(&call());
        // Hand-computed: gw waits for ai (the last to finish) 90–100; ai for llm 85–90;
        // llm 50–85; back in ai at 50, wl ended before (49): ai 49–50, wl 35–49; back in ai
        // at 35 nothing ended before: ai 30–35; back in gw at 30, asr ended after: gw 0–30.
        assert_eq!(
            sections(&a),
            vec![
                ("gw", 90, 100),
                ("ai", 85, 90),
                ("llm", 50, 85),
                ("ai", 49, 50),
                ("wl", 35, 49),
                ("ai", 30, 35),
                ("gw", 0, 30)
            ]
        );
        let total: i64 = a.critical_path.iter().map(|s| s.section_end - s.section_start).sum();
        assert_eq!(total, 100, "the path covers the trace");
        let top: Vec<_> = a.bottlenecks.iter().take(2).map(|b| (b.span_id.as_str(), b.critical_path_us)).collect();
        assert_eq!(top, vec![("gw", 40), ("llm", 35)]);
    }

    #[test]
    fn self_time_is_the_duration_no_child_covers() {
        let a = analyze(&call());
        let self_of = |id: &str| a.self_times.iter().find(|s| s.span_id == id).map(|s| s.self_time_us);
        // gw 0–100 minus the union of 10–40 and 30–90 (10–90) = 20.
        assert_eq!(self_of("gw"), Some(20));
        // ai 30–90 minus 35–49 and 50–85 = 11.
        assert_eq!(self_of("ai"), Some(11));
        assert_eq!(self_of("llm"), Some(35));
        let llm = a.by_service.iter().find(|g| g.service == "llm").expect("llm");
        assert!((llm.critical_path_share - 0.35).abs() < 1e-9);
    }

    #[test]
    fn children_outside_their_parent_are_dropped_and_overflowing_ones_clipped() {
        let spans = vec![
            span("p", None, "a", 100, 100),
            span("late", Some("p"), "b", 250, 10),
            span("over", Some("p"), "c", 150, 100),
        ];
        let a = analyze(&spans);
        assert_eq!(sections(&a), vec![("over", 150, 200), ("p", 100, 150)]);
    }

    #[test]
    fn consumers_of_a_producer_are_not_waited_for() {
        let mut spans = vec![
            span("p", None, "a", 0, 100),
            span("send", Some("p"), "a", 10, 5),
            span("recv", Some("send"), "b", 12, 80),
        ];
        spans[1].kind = "producer".into();
        spans[2].kind = "consumer".into();
        let a = analyze(&spans);
        assert_eq!(sections(&a), vec![("p", 15, 100), ("send", 10, 15), ("p", 0, 10)]);
    }

    #[test]
    fn the_error_chain_runs_from_the_deepest_error_to_the_root() {
        let mut spans = call();
        spans[4].error = true; // llm
        spans[2].error = true; // ai
        let a = analyze(&spans);
        let chain: Vec<_> = a.error_chain.iter().map(|h| (h.span_id.as_str(), h.error)).collect();
        assert_eq!(chain, vec![("llm", true), ("ai", true), ("gw", false)]);
        assert_eq!(a.error_services, vec!["llm", "ai", "gateway"]);
        assert!(analyze(&call()).error_chain.is_empty());
    }
}
