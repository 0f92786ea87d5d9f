"""Produces metric events to callscope with the standard Python Kafka client
(confluent-kafka): half through the Confluent AvroSerializer, which learns the schema id
from callscope's schema-registry endpoints, half as plain JSON.

usage: python_producer.py BROKERS REGISTRY_URL COUNT
"""
import json
import sys
import time

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer

brokers, registry_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = SchemaRegistryClient({"url": registry_url})
schema = registry.get_latest_version("callscope.metrics-value").schema
serializer = AvroSerializer(registry, schema.schema_str)  # auto-registers: idempotent for the built-in schema
avro = SerializingProducer({"bootstrap.servers": brokers, "value.serializer": serializer})
plain = Producer({"bootstrap.servers": brokers})
failures = []


def report(err, _msg):
    if err is not None:
        failures.append(str(err))


now = int(time.time() * 1000)
for i in range(count):
    event = {
        "name": "python_probe_total",
        "kind": "counter",
        "value": float(i),
        "timestamp_ms": now,
        "service": "python-client",
        "labels": {"client": "python", "encoding": "avro" if i % 2 == 0 else "json", "seq": str(i)},
        "unit": None,
    }
    if i % 2 == 0:
        avro.produce("callscope.metrics", value=event, on_delivery=report)
    else:
        del event["unit"]
        plain.produce("callscope.metrics", json.dumps(event).encode(), on_delivery=report)
avro.flush(30)
plain.flush(30)
if failures:
    sys.exit("delivery failed: " + "; ".join(failures[:5]))
print(f"produced {count}")
