//! The leader lease: one evaluator in the cluster notifies and publishes transitions, the
//! one whose consumer holds partition 0 of the one-partition lease topic in the lease
//! group. Kafka's group protocol hands the partition to a survivor when the holder dies.

use std::sync::Arc;
use std::time::Duration;

use callscope_runtime::KafkaConnection;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Membership of the lease group, kept alive by a polling task.
pub struct Lease {
    consumer: Arc<StreamConsumer>,
    topic: String,
    poller: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Joins `group` on `topic` (which must exist) and keeps polling until `shutdown`.
    pub fn join(kafka: &KafkaConnection, topic: &str, group: &str, shutdown: CancellationToken) -> Result<Lease> {
        let consumer: StreamConsumer = kafka
            .consumer_config(group)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create()?;
        consumer.subscribe(&[topic])?;
        let consumer = Arc::new(consumer);
        let poller = {
            let consumer = consumer.clone();
            tokio::spawn(async move {
                // Polling keeps the membership alive and serves rebalances; the topic stays empty.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        received = consumer.recv() => {
                            if let Err(e) = received {
                                tracing::debug!(error = %e, "alerting lease poll");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            })
        };
        Ok(Lease { consumer, topic: topic.to_string(), poller })
    }

    /// Whether this process holds the lease now.
    pub fn is_leader(&self) -> bool {
        self.consumer
            .assignment()
            .is_ok_and(|a| a.elements().iter().any(|e| e.topic() == self.topic && e.partition() == 0))
    }

    /// Leaves and rejoins the group, which forces a new generation (Tansu 0.6 can leave a dead
    /// member's partition unassigned until then).
    pub fn rejoin(&self) {
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[self.topic.as_str()]) {
            tracing::warn!(error = %e, "could not rejoin the alerting lease group");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
