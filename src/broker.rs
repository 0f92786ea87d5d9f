//! The embedded Kafka-compatible broker: Tansu, in-process, on a task of our runtime.
//! Storage is SQLite in the data directory by default (acknowledged events survive a
//! restart) or memory. Tansu does not create topics on first use; callers create them with
//! the admin API ([`crate::topics`]) once [`EmbeddedBroker::start`] returns.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use url::Url;

use crate::cli::BrokerStorage;

/// A running embedded broker; stopping it aborts its task.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start(addr: SocketAddr, data_dir: &Path, storage: BrokerStorage) -> anyhow::Result<EmbeddedBroker> {
        Self::start_advertising(addr, None, data_dir, storage).await
    }

    /// Like [`start`](Self::start), telling clients to connect to `advertised` (`host:port`,
    /// e.g. a container's service name) instead of the address it listens on.
    pub async fn start_advertising(
        addr: SocketAddr,
        advertised: Option<&str>,
        data_dir: &Path,
        storage: BrokerStorage,
    ) -> anyhow::Result<EmbeddedBroker> {
        let storage_url = match storage {
            BrokerStorage::Memory => Url::parse("memory://tansu/")?,
            BrokerStorage::Sqlite => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
                let abs = std::fs::canonicalize(data_dir)?;
                // Tansu joins the URL path to the working directory: an absolute path needs
                // the extra slash (sqlite:////abs/dir/broker.db).
                Url::parse(&format!("sqlite:///{}/broker.db", abs.display()))?
            }
        };
        let listener = Url::parse(&format!("tcp://{addr}"))?;
        let advertised_listener = match advertised {
            Some(host_port) => Url::parse(&format!("tcp://{host_port}"))
                .ok()
                .filter(|u| u.host_str().is_some() && u.port().is_some())
                .with_context(|| format!("--kafka-advertised-addr {host_port:?} is not HOST:PORT"))?,
            None => listener.clone(),
        };
        if std::net::TcpListener::bind(addr).is_err() {
            bail!(
                "cannot listen on {addr} for the embedded broker: the address is in use (choose another with --kafka-addr)"
            );
        }
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("callscope")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(advertised_listener)
            .storage(storage_url.clone())
            .listener(listener)
            .silent(true)
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("embedded broker (storage {storage_url}): {e}"))?;
        let task = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if task.is_finished() || tokio::time::Instant::now() > deadline {
                bail!("embedded broker did not start listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(%addr, storage = %storage_url, "embedded Kafka broker (Tansu) listening");
        Ok(EmbeddedBroker { addr, task })
    }

    /// Starts the broker on a free loopback port (benchmarks).
    pub async fn start_on_free_port(data_dir: &Path, storage: BrokerStorage) -> anyhow::Result<EmbeddedBroker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start(SocketAddr::from(([127, 0, 0, 1], port)), data_dir, storage).await
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
