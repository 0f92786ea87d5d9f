//! Where the query API listens.

use std::net::SocketAddr;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address of the query API.
    #[arg(long, env = "CALLSCOPE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
}
