//! End-to-end tests of the `callscope` binary: a real Tansu broker (embedded in the binary,
//! on a free loopback port), real Kafka clients (rdkafka), real HTTP, real Parquet files in
//! a temporary directory.

mod support;

mod alerting;
mod api;
mod cli;
mod cluster;
mod consumer_group;
mod crash_safety;
mod custom_metrics;
mod dashboards;
mod deploy;
mod grafana_deploy;
mod grafana_json;
mod ingest;
mod lifecycle;
mod otlp;
mod prometheus_api;
mod python_client;
mod s3_tier;
mod service_health;
mod tracing;
mod viewer;
mod windows;
