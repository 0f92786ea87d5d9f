//! The query API's own settings (and those of `callscope sql`, which takes their defaults).

use callscope_query_api::SqlLimits;
use callscope_query_api::engine::EngineOptions;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Most rows one /monitoring/sql answer returns.
    #[arg(long, env = "CALLSCOPE_SQL_MAX_ROWS", default_value_t = SqlLimits::DEFAULT_MAX_ROWS)]
    pub sql_max_rows: usize,
    /// Time limit of one SQL query.
    #[arg(long, env = "CALLSCOPE_SQL_TIMEOUT", default_value_t = SqlLimits::DEFAULT_TIMEOUT.into())]
    pub sql_timeout: humantime::Duration,
    /// Memory one query may use, in MiB.
    #[arg(long, env = "CALLSCOPE_QUERY_MEMORY_MB", default_value_t = EngineOptions::DEFAULT_MEMORY_MB)]
    pub query_memory_mb: usize,
    /// Roles of a request that names none (no `X-Callscope-Roles` header): what an
    /// anonymous caller may see and change of the dashboards, until authentication lands.
    #[arg(long, env = "CALLSCOPE_ANONYMOUS_ROLES", value_delimiter = ',', default_value = "viewer,editor")]
    pub anonymous_roles: Vec<String>,
    /// Prices of the cost report (`/monitoring/storage/costs`), a JSON file: per-tier
    /// `usd_per_gb_month`, `usd_per_1000_write_requests`, `usd_per_1000_read_requests`;
    /// what it leaves out keeps the defaults (S3 Standard, Standard-IA, Glacier IR, Deep
    /// Archive list prices).
    #[arg(long, env = "CALLSCOPE_PRICES")]
    pub prices: Option<std::path::PathBuf>,
}

impl QueryArgs {
    /// The cost model: the `--prices` file over the defaults.
    pub fn cost_model(&self) -> anyhow::Result<callscope_storage::costs::CostModel> {
        use anyhow::Context;
        let Some(path) = &self.prices else { return Ok(Default::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --prices {}", path.display()))?;
        callscope_storage::costs::CostModel::from_json(&text).with_context(|| format!("--prices {}", path.display()))
    }
}

impl From<&QueryArgs> for EngineOptions {
    fn from(query: &QueryArgs) -> EngineOptions {
        EngineOptions { memory_limit: query.query_memory_mb << 20, ..EngineOptions::default() }
    }
}

impl From<&QueryArgs> for SqlLimits {
    fn from(query: &QueryArgs) -> SqlLimits {
        SqlLimits { max_rows: query.sql_max_rows, timeout: *query.sql_timeout }
    }
}
