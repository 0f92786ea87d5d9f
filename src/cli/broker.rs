//! The embedded Kafka-compatible broker (Tansu) of `standalone` and `broker`.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

/// Where the embedded broker keeps its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerStorage {
    /// SQLite in the data directory: acknowledged events survive a restart.
    Sqlite,
    /// Memory only (tests and benchmarks).
    Memory,
}

impl std::fmt::Display for BrokerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BrokerStorage::Sqlite => "sqlite",
            BrokerStorage::Memory => "memory",
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Address of the embedded broker (`standalone`: ignored with --brokers).
    #[arg(long, env = "CALLSCOPE_KAFKA_ADDR", default_value = super::kafka::LOCAL_BROKER)]
    pub kafka_addr: SocketAddr,
    /// The `HOST:PORT` clients are told to connect to (default: --kafka-addr); set it when
    /// the broker listens on 0.0.0.0 in a container (`broker:9092`).
    #[arg(long, env = "CALLSCOPE_KAFKA_ADVERTISED_ADDR")]
    pub kafka_advertised_addr: Option<String>,
    /// Embedded broker storage.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", value_enum, default_value = "sqlite")]
    pub broker_storage: BrokerStorage,
}
