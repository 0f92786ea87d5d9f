//! The process's log: `tracing` to stderr, filtered by `CALLSCOPE_LOG` (default `info`), as
//! text or JSON lines (`--log-format`).

use crate::cli::LogFormat;

/// Tansu logs every request at INFO; keep it at WARN unless the filter names it.
const QUIET_BROKER: &str = "tansu_broker=warn,tansu_storage=warn,tansu_sans_io=warn,tansu_schema=warn,tansu_service=warn,tansu_auth=warn,tansu_model=warn,librdkafka=warn,rdkafka=warn";

pub fn init(format: LogFormat) {
    let base = std::env::var("CALLSCOPE_LOG").unwrap_or_else(|_| "info".to_string());
    let directives = if base.contains("tansu") { base } else { format!("{base},{QUIET_BROKER}") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_BROKER}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
