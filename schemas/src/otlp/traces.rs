//! OTLP spans → span events.
//!
//! Per span: trace and span ids in lowercase hex (16 and 8 bytes; an empty parent id is a
//! root), `name` → operation, the kind enum (unspecified reads as internal), the status
//! code and message, start and duration in microseconds (from nanoseconds, truncated),
//! span attributes → attributes, resource attributes → resource_attributes, events →
//! events. Links and dropped counts are not kept.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};

use super::{Decoded, OtlpEncoding, OtlpError, attributes, decode_request, hex, service_name};
use crate::events::{Event, Labels, Span, SpanEvent, SpanKind, SpanStatus};

/// Decodes a trace export request, span by span.
pub fn decode(bytes: &[u8], encoding: OtlpEncoding) -> Result<Decoded<ExportTraceServiceRequest>, OtlpError> {
    let request: ExportTraceServiceRequest = decode_request(bytes, encoding)?;
    Ok(convert(request))
}

/// The span events of a request; invalid spans are rejected (see [`Decoded`]).
pub fn convert(request: ExportTraceServiceRequest) -> Decoded<ExportTraceServiceRequest> {
    let mut out = Decoded::default();
    let mut rejected_resources = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = service_name(&resource);
        let mut rejected_scopes = Vec::new();
        for scope_spans in resource_spans.scope_spans {
            let mut rejected_spans = Vec::new();
            for span in &scope_spans.spans {
                match span_event(span, &service, &resource) {
                    Ok(event) => {
                        out.accepted += 1;
                        out.events.push(Event::Span(event));
                    }
                    Err(reason) => {
                        out.reject(reason);
                        rejected_spans.push(span.clone());
                    }
                }
            }
            if !rejected_spans.is_empty() {
                rejected_scopes.push(ScopeSpans { spans: rejected_spans, ..scope_spans });
            }
        }
        if !rejected_scopes.is_empty() {
            rejected_resources.push(ResourceSpans { scope_spans: rejected_scopes, ..resource_spans });
        }
    }
    if !rejected_resources.is_empty() {
        out.rejected_request = Some(ExportTraceServiceRequest { resource_spans: rejected_resources });
    }
    out
}

fn span_event(span: &OtlpSpan, service: &str, resource: &Labels) -> Result<Span, String> {
    let id = |field: &str, bytes: &[u8], len: usize| {
        if bytes.len() == len {
            Ok(hex(bytes))
        } else {
            Err(format!("span {:?}: {field} has {} bytes, expected {len}", span.name, bytes.len()))
        }
    };
    let trace_id = id("traceId", &span.trace_id, 16)?;
    let span_id = id("spanId", &span.span_id, 8)?;
    let parent_span_id =
        if span.parent_span_id.is_empty() { None } else { Some(id("parentSpanId", &span.parent_span_id, 8)?) };
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!("span {:?} ({span_id}): ends before it starts", span.name));
    }
    let micros = |nanos: u64| i64::try_from(nanos / 1000).map_err(|_| format!("span {span_id}: time out of range"));
    let start_time_us = micros(span.start_time_unix_nano)?;
    let duration_us = micros(span.end_time_unix_nano - span.start_time_unix_nano)?;
    let kind = match OtlpKind::try_from(span.kind).unwrap_or(OtlpKind::Unspecified) {
        OtlpKind::Server => SpanKind::Server,
        OtlpKind::Client => SpanKind::Client,
        OtlpKind::Producer => SpanKind::Producer,
        OtlpKind::Consumer => SpanKind::Consumer,
        OtlpKind::Internal | OtlpKind::Unspecified => SpanKind::Internal,
    };
    let (status, status_message) = match &span.status {
        Some(s) => (
            match StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset) {
                StatusCode::Ok => SpanStatus::Ok,
                StatusCode::Error => SpanStatus::Error,
                StatusCode::Unset => SpanStatus::Unset,
            },
            Some(s.message.clone()).filter(|m| !m.is_empty()),
        ),
        None => (SpanStatus::Unset, None),
    };
    let events = span
        .events
        .iter()
        .map(|e| SpanEvent {
            time_us: i64::try_from(e.time_unix_nano / 1000).unwrap_or(i64::MAX),
            name: e.name.clone(),
            attributes: attributes(&e.attributes),
        })
        .collect();
    let event = Span {
        trace_id,
        span_id,
        parent_span_id,
        service: service.to_string(),
        operation: span.name.clone(),
        kind,
        start_time_us,
        duration_us,
        status,
        attributes: attributes(&span.attributes),
        status_message,
        resource_attributes: resource.clone(),
        events,
    };
    Event::Span(event.clone()).validate().map_err(|(field, why)| format!("span {:?}: {field} {why}", span.name))?;
    Ok(event)
}

/// The request split into one request per trace (the collector's `partition_traces_by_id`
/// layout): each keeps its spans' resource and scope. Returns (trace id in hex, request).
pub fn split_by_trace(request: ExportTraceServiceRequest) -> Vec<(String, ExportTraceServiceRequest)> {
    use std::collections::BTreeMap;
    let mut traces: BTreeMap<String, ExportTraceServiceRequest> = BTreeMap::new();
    for resource_spans in request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let request = traces.entry(hex(&span.trace_id)).or_default();
                // The trace's request holds this resource and scope once, in arrival order.
                let resource =
                    match request.resource_spans.iter_mut().position(|r| {
                        r.resource == resource_spans.resource && r.schema_url == resource_spans.schema_url
                    }) {
                        Some(i) => &mut request.resource_spans[i],
                        None => {
                            request.resource_spans.push(ResourceSpans {
                                resource: resource_spans.resource.clone(),
                                scope_spans: Vec::new(),
                                schema_url: resource_spans.schema_url.clone(),
                            });
                            request.resource_spans.last_mut().expect("just pushed")
                        }
                    };
                let scope = match resource
                    .scope_spans
                    .iter_mut()
                    .position(|s| s.scope == scope_spans.scope && s.schema_url == scope_spans.schema_url)
                {
                    Some(i) => &mut resource.scope_spans[i],
                    None => {
                        resource.scope_spans.push(ScopeSpans {
                            scope: scope_spans.scope.clone(),
                            spans: Vec::new(),
                            schema_url: scope_spans.schema_url.clone(),
                        });
                        resource.scope_spans.last_mut().expect("just pushed")
                    }
                };
                scope.spans.push(span.clone());
            }
        }
    }
    traces.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{Status, span};
    use prost::Message;

    use super::*;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }) }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: OtlpKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_500,
            attributes: vec![
                kv("http.status_code", any_value::Value::IntValue(503)),
                kv("retry", any_value::Value::BoolValue(true)),
            ],
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: vec![kv("exception.type", any_value::Value::StringValue("Timeout".into()))],
                dropped_attributes_count: 0,
            }],
            status: Some(Status { message: "upstream timeout".into(), code: StatusCode::Error as i32 }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("call-gateway".into())),
                        kv("host.name", any_value::Value::StringValue("gw-1".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn a_span_keeps_everything_the_span_dataset_holds() {
        let bytes = request(vec![span(0xab, 0x01, Some(0x02), "POST /call")]).encode_to_vec();
        let decoded = decode(&bytes, OtlpEncoding::Proto).expect("decodes");
        assert_eq!(decoded.rejected, 0);
        let Event::Span(s) = &decoded.events[0] else { panic!("not a span") };
        assert_eq!(s.trace_id, "ab".repeat(16));
        assert_eq!(s.span_id, "01".repeat(8));
        assert_eq!(s.parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(
            (s.service.as_str(), s.operation.as_str(), s.kind),
            ("call-gateway", "POST /call", SpanKind::Server)
        );
        assert_eq!((s.start_time_us, s.duration_us), (1_700_000_000_000_000, 250_000));
        assert_eq!((s.status, s.status_message.as_deref()), (SpanStatus::Error, Some("upstream timeout")));
        assert_eq!(s.attributes["http.status_code"], "503");
        assert_eq!(s.attributes["retry"], "true");
        assert_eq!(s.resource_attributes["host.name"], "gw-1");
        assert_eq!(s.events[0].name, "exception");
        assert_eq!(s.events[0].time_us, 1_700_000_000_100_000);
        assert_eq!(s.events[0].attributes["exception.type"], "Timeout");
    }

    #[test]
    fn otlp_json_reads_like_protobuf() {
        let json = serde_json::to_vec(&request(vec![span(0xab, 0x01, None, "POST /call")])).expect("json");
        let text = String::from_utf8(json.clone()).expect("utf8");
        assert!(text.contains(&format!("\"traceId\":\"{}\"", "ab".repeat(16))), "{text}");
        assert!(text.contains("\"startTimeUnixNano\":\"1700000000000000000\""), "{text}");
        let from_json = decode(&json, OtlpEncoding::detect(&json)).expect("decodes");
        let from_proto =
            decode(&request(vec![span(0xab, 0x01, None, "POST /call")]).encode_to_vec(), OtlpEncoding::Proto)
                .expect("decodes");
        assert_eq!(from_json.events, from_proto.events);
    }

    #[test]
    fn bad_spans_are_rejected_and_the_rest_kept() {
        let mut short_id = span(0xab, 0x03, None, "bad id");
        short_id.trace_id = vec![1; 5];
        let mut backwards = span(0xab, 0x04, None, "backwards");
        backwards.end_time_unix_nano = 1;
        let decoded = convert(request(vec![span(0xab, 0x01, None, "ok"), short_id, backwards]));
        assert_eq!((decoded.events.len(), decoded.rejected), (1, 2));
        assert!(decoded.summary().contains("traceId has 5 bytes"), "{}", decoded.summary());
        let rejected = decoded.rejected_request.expect("rejected spans");
        let names: Vec<_> = rejected.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["bad id", "backwards"]);
        assert!(rejected.resource_spans[0].resource.is_some(), "the resource travels with its spans");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"", OtlpEncoding::Proto).is_err());
        assert!(decode(b"{\"resourceSpans\": 7}", OtlpEncoding::Json).is_err());
        assert!(decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2], OtlpEncoding::Proto).is_err());
    }

    #[test]
    fn a_request_splits_into_one_request_per_trace() {
        let parts = split_by_trace(request(vec![
            span(0x0a, 1, None, "a1"),
            span(0x0b, 2, None, "b1"),
            span(0x0a, 3, Some(1), "a2"),
        ]));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "0a".repeat(16));
        let spans: Vec<_> = parts[0].1.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.name.clone()).collect();
        assert_eq!(spans, ["a1", "a2"]);
        assert_eq!(parts[1].1.resource_spans.len(), 1);
    }
}
