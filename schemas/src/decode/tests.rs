use proptest::prelude::*;

use super::*;
use crate::arrow_schema::{SourcedEvent, schema, to_record_batch};
use crate::avro::{SchemaRegistry, encode_confluent, encode_single_object};
use crate::events::*;

const NOW: i64 = 1_790_000_000_000;

fn options() -> DecodeOptions {
    DecodeOptions { max_time_skew_ms: DecodeOptions::DEFAULT_MAX_SKEW_MS, now_ms: NOW }
}

fn metric() -> Event {
    Event::Metric(Metric {
        name: "ai_response_time_ms".into(),
        kind: MetricKind::Histogram,
        value: 231.5,
        timestamp_ms: NOW - 1000,
        service: "ai-engine".into(),
        labels: [("model".to_string(), "qwen".to_string()), ("region".into(), "cn-east".into())].into_iter().collect(),
        unit: Some("milliseconds".into()),
    })
}

fn span() -> Event {
    Event::Span(Span {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        parent_span_id: Some("a3ce929d0e0e4736".into()),
        service: "asr".into(),
        operation: "transcribe".into(),
        kind: SpanKind::Server,
        start_time_us: (NOW - 5000) * 1000,
        duration_us: 120_000,
        status: SpanStatus::Ok,
        attributes: [("call.id".to_string(), "c-1".to_string())].into_iter().collect(),
        status_message: Some("retried once".into()),
        resource_attributes: [("host.name".to_string(), "asr-7".to_string())].into_iter().collect(),
        events: vec![crate::SpanEvent {
            time_us: (NOW - 4990) * 1000,
            name: "retry".into(),
            attributes: [("attempt".to_string(), "2".to_string())].into_iter().collect(),
        }],
    })
}

fn alert() -> Event {
    Event::Alert(Alert {
        alert_name: "HighCallFailureRate".into(),
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        service: "call-gateway".into(),
        labels: [("team".to_string(), "voice".to_string())].into_iter().collect(),
        annotations: [("summary".to_string(), "failures above 5%".to_string())].into_iter().collect(),
        starts_at_ms: NOW - 60_000,
        ends_at_ms: None,
        value: Some(0.072),
        source: "call-gateway".into(),
    })
}

#[test]
fn builtin_schemas_parse_and_have_stable_ids() {
    let registry = SchemaRegistry::builtin();
    assert_eq!(registry.all().len(), 4);
    assert_eq!(registry.by_subject("callscope.metrics-value").map(|s| s.id), Some(1));
    assert_eq!(registry.by_subject("callscope.spans-value").map(|s| (s.id, s.version)), Some((4, 2)));
    assert_eq!(registry.by_subject("callscope.alerts-value").map(|s| s.id), Some(3));
    let spans: Vec<(i32, i32)> = registry.versions("callscope.spans-value").iter().map(|s| (s.id, s.version)).collect();
    assert_eq!(spans, vec![(2, 1), (4, 2)]);
    assert_eq!(registry.by_dataset(Dataset::Spans).id, 4, "producers write the newest version");
}

/// Data written with span schema version 1 (id 2) is still read: the fields version 2
/// added take their defaults.
#[test]
fn span_version_1_data_is_still_read() {
    use apache_avro::types::Value;
    let v1 = SchemaRegistry::builtin().by_id(2).expect("span v1");
    let text = |s: &str| Value::String(s.into());
    let record = Value::Record(vec![
        ("trace_id".into(), text("4bf92f3577b34da6a3ce929d0e0e4736")),
        ("span_id".into(), text("00f067aa0ba902b7")),
        ("parent_span_id".into(), Value::Union(0, Box::new(Value::Null))),
        ("service".into(), text("asr")),
        ("operation".into(), text("transcribe")),
        ("kind".into(), Value::Enum(0, "server".into())),
        ("start_time_us".into(), Value::Long((NOW - 5000) * 1000)),
        ("duration_us".into(), Value::Long(120_000)),
        ("status".into(), Value::Enum(1, "error".into())),
        ("attributes".into(), Value::Map(Default::default())),
    ]);
    let mut bytes = vec![0u8, 0, 0, 0, 2];
    bytes.extend(apache_avro::to_avro_datum(&v1.schema, record).expect("v1 datum"));
    let (decoded, _) = decode_event(Dataset::Spans, &bytes, &options()).expect("decode");
    let Event::Span(span) = decoded else { panic!("a span") };
    assert_eq!((span.service.as_str(), span.status), ("asr", SpanStatus::Error));
    assert_eq!((span.status_message, span.resource_attributes.len(), span.events.len()), (None, 0, 0));
}

#[test]
fn avro_confluent_round_trip_every_dataset() {
    for event in [metric(), span(), alert()] {
        let bytes = encode_confluent(&event).expect("encode");
        assert_eq!(bytes[0], 0);
        let (decoded, encoding) = decode_event(event.dataset(), &bytes, &options()).expect("decode");
        assert_eq!(encoding, Encoding::AvroConfluent);
        assert_eq!(decoded, event);
    }
}

#[test]
fn avro_single_object_round_trip() {
    for event in [metric(), span(), alert()] {
        let bytes = encode_single_object(&event).expect("encode");
        let (decoded, encoding) = decode_event(event.dataset(), &bytes, &options()).expect("decode");
        assert_eq!(encoding, Encoding::AvroSingleObject);
        assert_eq!(decoded, event);
    }
}

#[test]
fn json_round_trip_every_dataset() {
    for event in [metric(), span(), alert()] {
        let bytes = crate::json::encode(&event);
        let (decoded, encoding) = decode_event(event.dataset(), &bytes, &options()).expect("decode");
        assert_eq!(encoding, Encoding::Json);
        assert_eq!(decoded, event);
    }
}

#[test]
fn json_missing_field_names_it() {
    let err =
        decode_event(Dataset::Metrics, br#"{"name":"x","kind":"gauge","timestamp_ms":1,"service":"s"}"#, &options())
            .expect_err("value is missing");
    assert_eq!(err.kind(), "json");
    assert!(err.to_string().contains("value"), "{err}");
}

#[test]
fn non_finite_values_are_rejected() {
    let Event::Metric(mut m) = metric() else { unreachable!() };
    m.value = f64::NAN;
    let bytes = encode_confluent(&Event::Metric(m.clone())).expect("encode");
    let err = decode_event(Dataset::Metrics, &bytes, &options()).expect_err("NaN");
    assert_eq!(err.kind(), "invalid_field");
    m.value = f64::INFINITY;
    let bytes = encode_confluent(&Event::Metric(m)).expect("encode");
    assert!(decode_event(Dataset::Metrics, &bytes, &options()).is_err());
}

#[test]
fn skewed_timestamps_are_rejected() {
    let Event::Metric(mut m) = metric() else { unreachable!() };
    m.timestamp_ms = NOW + 8 * 24 * 3600 * 1000;
    let err = decode_event(Dataset::Metrics, &crate::json::encode(&Event::Metric(m)), &options())
        .expect_err("too far in the future");
    assert_eq!(err.kind(), "timestamp_out_of_range");
}

#[test]
fn unknown_schema_id_and_wrong_dataset() {
    let mut bytes = encode_confluent(&metric()).expect("encode");
    bytes[4] = 99;
    let err = decode_event(Dataset::Metrics, &bytes, &options()).expect_err("unknown id");
    assert_eq!(err.kind(), "unknown_schema");

    let bytes = encode_confluent(&span()).expect("encode");
    let err = decode_event(Dataset::Metrics, &bytes, &options()).expect_err("span on metrics");
    assert_eq!(err.kind(), "wrong_dataset");
}

#[test]
fn bad_ids_are_rejected() {
    let Event::Span(mut s) = span() else { unreachable!() };
    s.trace_id = "XYZ".into();
    let err =
        decode_event(Dataset::Spans, &crate::json::encode(&Event::Span(s)), &options()).expect_err("bad trace id");
    assert!(err.to_string().contains("trace_id"), "{err}");
}

#[test]
fn trailing_garbage_after_avro_datum_is_rejected() {
    let mut bytes = encode_confluent(&metric()).expect("encode");
    bytes.extend_from_slice(b"junk");
    assert!(decode_event(Dataset::Metrics, &bytes, &options()).is_err());
}

#[test]
fn record_batches_match_the_dataset_schema() {
    for event in [metric(), span(), alert()] {
        let dataset = event.dataset();
        let rows = vec![
            SourcedEvent { partition: 0, offset: 7, event: event.clone() },
            SourcedEvent { partition: 1, offset: 8, event },
        ];
        let batch = to_record_batch(dataset, &rows).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema(dataset));
    }
    let rows = vec![SourcedEvent { partition: 0, offset: 1, event: span() }];
    assert!(to_record_batch(Dataset::Metrics, &rows).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic, whatever the dataset.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for dataset in Dataset::ALL {
            let _ = decode_event(dataset, &bytes, &options());
        }
    }

    /// Bytes that look like a Confluent frame with a valid id but a random datum never panic.
    #[test]
    fn random_avro_datums_never_panic(id in 1i32..5, body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        for dataset in Dataset::ALL {
            let _ = decode_event(dataset, &bytes, &options());
        }
    }

    /// Random valid metrics survive both encodings unchanged.
    #[test]
    fn metric_round_trips(
        name in "[a-z_]{1,20}",
        value in 0.0f64..1e12,
        offset_ms in 0i64..1_000_000,
        labels in proptest::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..5),
    ) {
        let event = Event::Metric(Metric {
            name, kind: MetricKind::Counter, value, timestamp_ms: NOW - offset_ms,
            service: "billing".into(), labels, unit: None,
        });
        let avro = encode_confluent(&event).expect("encode");
        prop_assert_eq!(&decode_event(Dataset::Metrics, &avro, &options()).expect("avro").0, &event);
        let json = crate::json::encode(&event);
        prop_assert_eq!(&decode_event(Dataset::Metrics, &json, &options()).expect("json").0, &event);
    }
}
