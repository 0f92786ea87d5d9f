//! How client commands encode the events they produce.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// Confluent wire format (magic byte, schema id, Avro datum).
    Avro,
    Json,
    /// Alternate Avro and JSON message by message.
    Mixed,
}
