//! `callscope produce`: JSON lines (one event per line) from a file or stdin to a topic,
//! encoded as Avro (Confluent wire format) or JSON. Bad lines are reported with their line
//! number and skipped; the good lines around them are still produced.

use std::io::BufRead;

use anyhow::Context;
use callscope_schemas::{Dataset, DecodeOptions};

use crate::cli::ProduceConfig;
use crate::loadgen::EventSink;

pub async fn run(config: ProduceConfig) -> anyhow::Result<()> {
    let dataset = Dataset::from_name(&config.dataset).context("unknown dataset")?;
    let topic = config.topic.clone().unwrap_or_else(|| dataset.default_topic().to_string());
    let reader: Box<dyn BufRead> = if config.file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&config.file).with_context(|| format!("cannot open {}", config.file))?,
        ))
    };
    let mut sink = EventSink::new(&config.brokers, &config.kafka_properties, config.encoding)?;
    let options = DecodeOptions { max_time_skew_ms: i64::MAX, now_ms: callscope_pipeline::now_ms() };
    let (mut bad, mut lines) = (0u64, 0u64);
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let event = callscope_schemas::json::decode(dataset, line.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|e| callscope_schemas::decode::check(&e, &options).map(|_| e).map_err(|e| e.to_string()));
        match event {
            Ok(event) => {
                let payload = sink.encode(&event)?;
                sink.send_bytes(&topic, &event.partition_key(), &payload).await?;
            }
            Err(e) => {
                bad += 1;
                eprintln!("line {}: {e}", index + 1);
            }
        }
    }
    let counts = sink.finish().await;
    let acked = counts.acked.load(std::sync::atomic::Ordering::Relaxed);
    let failed = counts.failed.load(std::sync::atomic::Ordering::Relaxed);
    println!("{lines} lines: {acked} produced to {topic}, {bad} invalid, {failed} not acknowledged");
    anyhow::ensure!(bad == 0 && failed == 0, "{bad} invalid lines, {failed} unacknowledged events");
    Ok(())
}
