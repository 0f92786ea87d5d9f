//! Dead letters: messages that cannot be stored (undecodable, over a limit) go to the
//! dead-letter topic with the original key, payload and headers, plus headers that say why
//! and where they came from:
//!
//! | header | value |
//! | --- | --- |
//! | `callscope.error` | the reason, a sentence |
//! | `callscope.error.kind` | a short kind (`json`, `avro`, `cardinality_limit`, …) |
//! | `callscope.source.topic` / `.partition` / `.offset` | where the message was read |

use std::time::Duration;

use callscope_schemas::DLQ_TOPIC;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::Result;
use crate::kafka::KafkaConnection;

/// A message that could not be stored, on its way to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Offset in the source partition.
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub reason: String,
    pub kind: &'static str,
}

/// Sends dead letters and waits for the broker's acknowledgement of each.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterProducer {
    /// A producer to the default dead-letter topic.
    pub fn new(connection: &KafkaConnection) -> Result<DeadLetterProducer> {
        Ok(DeadLetterProducer { producer: connection.producer()?, topic: DLQ_TOPIC.to_string() })
    }

    /// Sends `dead` (read from `source_topic`/`source_partition`); returns once every one is
    /// acknowledged, or the first error.
    pub async fn send(&self, source_topic: &str, source_partition: i32, dead: &[DeadLetter]) -> Result<()> {
        let partition = source_partition.to_string();
        let sends = dead.iter().map(|d| {
            let offset = d.offset.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(d.headers.len() + 5);
            for (k, v) in &d.headers {
                headers = headers.insert(Header { key: k, value: v.as_deref() });
            }
            headers = headers
                .insert(Header { key: "callscope.error", value: Some(d.reason.as_bytes()) })
                .insert(Header { key: "callscope.error.kind", value: Some(d.kind.as_bytes()) })
                .insert(Header { key: "callscope.source.topic", value: Some(source_topic.as_bytes()) })
                .insert(Header { key: "callscope.source.partition", value: Some(partition.as_bytes()) })
                .insert(Header { key: "callscope.source.offset", value: Some(offset.as_bytes()) });
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic).payload(&d.payload).headers(headers);
            if let Some(key) = &d.key {
                record = record.key(key);
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(e.into());
            }
        }
        Ok(())
    }
}
