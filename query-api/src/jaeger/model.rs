//! Span rows (as the trace routes read them) in Jaeger's UI model: a trace with its spans,
//! each pointing at its process (service and resource attributes), tags (attributes, plus
//! `span.kind`, and `error=true` with `otel.status_code` / `otel.status_description` for
//! errors) and logs (span events). Ids are lowercase hex; times and durations µs.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

fn tag(key: &str, value: &Value) -> Value {
    match value {
        Value::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        Value::Number(n) if n.is_i64() => json!({"key": key, "type": "int64", "value": n}),
        Value::Number(n) => json!({"key": key, "type": "float64", "value": n}),
        Value::String(s) => json!({"key": key, "type": "string", "value": s}),
        other => json!({"key": key, "type": "string", "value": other.to_string()}),
    }
}

fn tags(map: &Value) -> Vec<Value> {
    map.as_object().map(|m| m.iter().map(|(k, v)| tag(k, v)).collect()).unwrap_or_default()
}

/// One trace (its span rows, any order) as a Jaeger trace.
pub fn trace(trace_id: &str, rows: &[Value]) -> Value {
    // Processes: one per distinct service and resource attributes, numbered p1, p2, …
    let mut processes: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut process_of: Vec<String> = Vec::with_capacity(rows.len());
    let mut keys: Vec<(String, String)> = Vec::new();
    for row in rows {
        let service = row["service"].as_str().unwrap_or_default().to_string();
        let resource = row.get("resource_attributes").cloned().unwrap_or(Value::Null);
        let key = (service.clone(), resource.to_string());
        let id = match keys.iter().position(|k| *k == key) {
            Some(i) => format!("p{}", i + 1),
            None => {
                keys.push(key);
                let id = format!("p{}", keys.len());
                processes.insert(id.clone(), (service, resource));
                id
            }
        };
        process_of.push(id);
    }
    let spans: Vec<Value> = rows
        .iter()
        .zip(&process_of)
        .map(|(row, process)| {
            let mut tags = tags(&row["attributes"]);
            tags.push(tag("span.kind", &row["kind"]));
            if row["status"] == "error" {
                tags.push(tag("error", &Value::Bool(true)));
                tags.push(tag("otel.status_code", &json!("ERROR")));
            } else if row["status"] == "ok" {
                tags.push(tag("otel.status_code", &json!("OK")));
            }
            if let Some(message) = row["status_message"].as_str() {
                tags.push(tag("otel.status_description", &json!(message)));
            }
            let logs: Vec<Value> = row["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|e| {
                            let mut fields = vec![tag("event", &e["name"])];
                            fields.extend(self::tags(&e["attributes"]));
                            json!({"timestamp": e["time_us"], "fields": fields})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let references: Vec<Value> = row["parent_span_id"]
                .as_str()
                .map(|p| vec![json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": p})])
                .unwrap_or_default();
            json!({
                "traceID": trace_id,
                "spanID": row["span_id"],
                "operationName": row["operation"],
                "references": references,
                "startTime": row["start_time_us"],
                "duration": row["duration_us"],
                "tags": tags,
                "logs": logs,
                "processID": process,
                "warnings": null,
            })
        })
        .collect();
    let processes: Map<String, Value> = processes
        .into_iter()
        .map(|(id, (service, resource))| {
            let tags: Vec<Value> = resource
                .as_object()
                .map(|m| m.iter().filter(|(k, _)| *k != "service.name").map(|(k, v)| tag(k, v)).collect())
                .unwrap_or_default();
            (id, json!({"serviceName": service, "tags": tags}))
        })
        .collect();
    json!({"traceID": trace_id, "spans": spans, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_a_jaeger_trace() {
        let rows = vec![
            json!({"span_id": "01", "parent_span_id": null, "service": "gw", "operation": "POST /call", "kind": "server",
                   "start_time_us": 10, "duration_us": 100, "status": "ok", "attributes": {"region": "north"},
                   "resource_attributes": {"service.name": "gw", "host.name": "h1"}, "events": []}),
            json!({"span_id": "02", "parent_span_id": "01", "service": "asr", "operation": "recognize", "kind": "client",
                   "start_time_us": 20, "duration_us": 50, "status": "error", "status_message": "timeout",
                   "attributes": {}, "resource_attributes": {},
                   "events": [{"time_us": 30, "name": "retry", "attributes": {"attempt": "2"}}]}),
        ];
        let t = trace("ab", &rows);
        assert_eq!(t["spans"][0]["processID"], "p1");
        assert_eq!(
            t["processes"]["p1"],
            json!({"serviceName": "gw", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]})
        );
        assert_eq!(t["spans"][1]["references"], json!([{"refType": "CHILD_OF", "traceID": "ab", "spanID": "01"}]));
        assert_eq!(t["spans"][0]["references"], json!([]));
        let tags = t["spans"][1]["tags"].as_array().expect("tags");
        assert!(tags.contains(&json!({"key": "error", "type": "bool", "value": true})));
        assert!(tags.contains(&json!({"key": "span.kind", "type": "string", "value": "client"})));
        assert!(tags.contains(&json!({"key": "otel.status_description", "type": "string", "value": "timeout"})));
        assert_eq!(t["spans"][1]["logs"][0]["fields"][0], json!({"key": "event", "type": "string", "value": "retry"}));
    }
}
