//! `callscope produce`: JSON lines (one event per line) from a file or stdin to a topic,
//! encoded as Avro (Confluent wire format) or JSON. Bad lines are reported with their line
//! number and skipped; the good lines around them are still produced. Every 2 s it reports
//! progress on stderr (lines read, events acknowledged, invalid lines, rate).

use std::io::BufRead;

use anyhow::Context;
use callscope_schemas::{Dataset, DecodeOptions, Event};

use crate::cli::ProduceConfig;
use crate::event_sink::EventSink;

/// How often progress is reported.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(config: ProduceConfig) -> anyhow::Result<()> {
    let dataset = config.dataset;
    let topic = config.topic.clone().unwrap_or_else(|| dataset.default_topic().to_string());
    let reader: Box<dyn BufRead> = if config.file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&config.file).with_context(|| format!("cannot open {}", config.file))?,
        ))
    };
    let mut sink = EventSink::new(&config.kafka.connection(), config.encoding)?;
    let options = DecodeOptions { max_time_skew_ms: i64::MAX, now_ms: callscope_runtime::now_ms() };
    let (mut bad, mut lines) = (0u64, 0u64);
    let counts = sink.counts();
    let started = std::time::Instant::now();
    let mut next_report = started + PROGRESS_EVERY;
    for (index, line) in reader.lines().enumerate() {
        if std::time::Instant::now() >= next_report {
            next_report += PROGRESS_EVERY;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "produce: {lines} lines read, {} acknowledged, {bad} invalid, {:.0} lines/s",
                counts.acked(),
                lines as f64 / seconds.max(1e-9)
            );
        }
        let line = line.with_context(|| format!("cannot read line {}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        match decode_line(dataset, &line, &options) {
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
    let (acked, failed) = (counts.acked(), counts.failed());
    println!("{lines} lines: {acked} produced to {topic}, {bad} invalid, {failed} not acknowledged");
    anyhow::ensure!(bad == 0 && failed == 0, "{bad} invalid lines, {failed} unacknowledged events");
    Ok(())
}

/// One line as a valid event of `dataset`.
fn decode_line(dataset: Dataset, line: &str, options: &DecodeOptions) -> anyhow::Result<Event> {
    let event = callscope_schemas::json::decode(dataset, line.as_bytes())?;
    callscope_schemas::decode::check(&event, options)?;
    Ok(event)
}
