"""OpenTelemetry clients for the OTLP end-to-end tests.

    otlp_client.py sdk <http base> <run id>
        exports one call-handling trace and some metrics with the OpenTelemetry Python SDK's
        OTLP/HTTP exporters (protobuf), the way an instrumented service would; prints the
        trace id.
    otlp_client.py kafka <brokers> <topic> <run id>
        writes trace export requests to Kafka exactly as the OpenTelemetry Collector's Kafka
        exporter does, built with the opentelemetry-proto package: one protobuf request and
        one OTLP JSON request (ids in hex, 64-bit integers as strings), then one message that
        is not OTLP; prints the two trace ids.
"""
import base64
import json
import sys
import time

from google.protobuf import json_format


def sdk(base, run):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    resource = Resource.create({"service.name": "call-gateway", "host.name": "gw-7", "run": run})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    tracer = tracer_provider.get_tracer("callscope-e2e")
    with tracer.start_as_current_span("POST /call", kind=SpanKind.SERVER, attributes={"call.id": run}) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("asr.recognize", kind=SpanKind.CLIENT) as asr:
            asr.set_attribute("asr.model", "zh-16k")
            asr.set_attribute("asr.words", 12)
            asr.add_event("retry", {"attempt": 2})
            asr.set_status(Status(StatusCode.ERROR, "recognizer timeout"))
        with tracer.start_as_current_span("whitelist.check", kind=SpanKind.INTERNAL):
            pass
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(
            endpoint=f"{base}/v1/metrics",
            preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA},
        ),
        export_interval_millis=3_600_000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("callscope-e2e")
    calls = meter.create_counter("otel_calls", unit="1")
    latency = meter.create_histogram("otel_asr_latency", unit="ms")
    calls.add(3, {"run": run, "region": "north"})
    calls.add(4, {"run": run, "region": "north"})
    for v in (40, 120, 130, 900):
        latency.record(v, {"run": run})
    meter_provider.shutdown()
    print(trace_id)


def request(run, trace_byte, encoding):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    trace_id = bytes([trace_byte]) * 16
    now = time.time_ns()
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="ai-engine")))
    rs.resource.attributes.append(KeyValue(key="run", value=AnyValue(string_value=run)))
    ss = rs.scope_spans.add()
    ss.scope.name = "collector-e2e"
    root = ss.spans.add(trace_id=trace_id, span_id=b"\x01" * 8, name="dialogue.turn", kind=Span.SPAN_KIND_SERVER,
                        start_time_unix_nano=now, end_time_unix_nano=now + 80_000_000)
    root.attributes.append(KeyValue(key="encoding", value=AnyValue(string_value=encoding)))
    child = ss.spans.add(trace_id=trace_id, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8, name="llm.generate",
                         kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=now + 5_000_000,
                         end_time_unix_nano=now + 65_000_000)
    child.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="model overloaded"))
    child.attributes.append(KeyValue(key="llm.tokens", value=AnyValue(int_value=321)))
    if encoding == "proto":
        return trace_id.hex(), req.SerializeToString()
    # OTLP JSON as the collector writes it: the protobuf JSON mapping, but ids in hex.
    doc = json_format.MessageToDict(req)
    for resource_spans in doc["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                span["kind"] = Span.SpanKind.Value(span["kind"]) if isinstance(span.get("kind"), str) else span.get("kind")
                if "status" in span and isinstance(span["status"].get("code"), str):
                    span["status"]["code"] = Status.StatusCode.Value(span["status"]["code"])
    return trace_id.hex(), json.dumps(doc).encode()


def kafka(brokers, topic, run):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers})
    ids = []
    for trace_byte, encoding in ((0xA1, "proto"), (0xB2, "json")):
        trace_id, payload = request(run, trace_byte, encoding)
        producer.produce(topic, value=payload)
        ids.append(trace_id)
    producer.produce(topic, value=b"\x0a\xff\xff\xff\xff\x0f not an export request")
    # Last, an export request whose one resource has no span: it stores nothing, and its
    # offset must still be committed.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    producer.produce(topic, value=ExportTraceServiceRequest(resource_spans=[ResourceSpans()]).SerializeToString())
    if producer.flush(30) != 0:
        raise SystemExit("messages were not delivered")
    print(" ".join(ids))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sdk":
        sdk(sys.argv[2], sys.argv[3])
    elif mode == "kafka":
        kafka(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
