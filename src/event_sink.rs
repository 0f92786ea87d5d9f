//! The Kafka event sink of `produce`, `loadgen` and the benchmarks: encodes events as Avro
//! (Confluent wire format), JSON or both alternately, and produces them with the bulk
//! producer preset without waiting for each acknowledgement; acknowledgements and failures
//! are counted on a task of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use callscope_runtime::KafkaConnection;
use callscope_runtime::kafka::ProducerProfile;
use callscope_schemas::Event;
use callscope_schemas::avro::encode_confluent;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::cli::EncodingArg;

pub struct EventSink {
    producer: FutureProducer,
    encoding: EncodingArg,
    sequence: u64,
    acks: mpsc::UnboundedSender<DeliveryFuture>,
    counts: Arc<Counts>,
    acker: tokio::task::JoinHandle<()>,
}

/// Events handed to the producer, acknowledged by the broker, and failed.
#[derive(Debug, Default)]
pub struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl EventSink {
    /// A sink to `connection` (creating the producer does not connect yet).
    pub fn new(connection: &KafkaConnection, encoding: EncodingArg) -> anyhow::Result<EventSink> {
        let producer = connection.producer_with(ProducerProfile::Bulk).context("cannot create Kafka producer")?;
        let (acks, mut rx) = mpsc::unbounded_channel::<DeliveryFuture>();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let acker = tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                match delivery.await {
                    Ok(Ok(_)) => c.acked.fetch_add(1, Ordering::Relaxed),
                    Ok(Err((e, _))) => {
                        tracing::warn!(error = %e, "event not acknowledged");
                        c.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        Ok(EventSink { producer, encoding, sequence: 0, acks, counts, acker })
    }

    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// The event in this sink's encoding (`Mixed`: JSON, Avro, JSON, …).
    pub fn encode(&mut self, event: &Event) -> anyhow::Result<Vec<u8>> {
        self.sequence += 1;
        let avro = match self.encoding {
            EncodingArg::Avro => true,
            EncodingArg::Json => false,
            EncodingArg::Mixed => self.sequence % 2 == 0,
        };
        Ok(if avro { encode_confluent(event)? } else { callscope_schemas::json::encode(event) })
    }

    /// Enqueues raw bytes; waits while the local queue is full.
    pub async fn send_bytes(&mut self, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        loop {
            match self.producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
                Ok(delivery) => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    let _ = self.acks.send(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Encodes the event and enqueues it to its dataset's topic, keyed by its partition key.
    pub async fn send(&mut self, event: &Event) -> anyhow::Result<()> {
        let payload = self.encode(event)?;
        self.send_bytes(event.dataset().default_topic(), &event.partition_key(), &payload).await
    }

    /// Waits for every acknowledgement; returns the counts.
    pub async fn finish(self) -> Arc<Counts> {
        let EventSink { producer, acks, counts, acker, .. } = self;
        drop(acks);
        let _ = acker.await;
        drop(producer);
        counts
    }
}
