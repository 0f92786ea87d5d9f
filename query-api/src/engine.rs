//! The DataFusion session: one listing table per dataset over the hot tier, and
//! `metric_rollups` (partition columns `resolution`, `date`, `hour`).
//!
//! Tables list their directory on every query (DataFusion's list-files cache is turned off),
//! so files written by the workers are visible without a restart. The `date` and `hour`
//! Hive partitions are columns too, which lets time filters skip whole directories.
//!
//! Every query runs in its own [`QueryEngine::session`], whose memory pool holds
//! `memory_limit` bytes: one heavy query fails with "resources exhausted" (a 422) instead of
//! starving every other query of a shared pool.

use std::sync::Arc;

use arrow::datatypes::DataType;
use callscope_schemas::Dataset;
use callscope_schemas::arrow_schema::schema;
use callscope_schemas::rollup::{ROLLUP_TABLE, rollup_schema};
use callscope_storage::Tier;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

/// A DataFusion session with the callscope tables registered.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    memory_limit: usize,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

/// Options of the session.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Memory a query may use before it fails, in bytes.
    pub memory_limit: usize,
    pub target_partitions: usize,
}

impl EngineOptions {
    /// Memory one query may use, in MiB (the default of `--query-memory-mb`).
    pub const DEFAULT_MEMORY_MB: usize = 2048;
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { memory_limit: Self::DEFAULT_MEMORY_MB << 20, target_partitions: 2 }
    }
}

impl QueryEngine {
    pub fn new(hot: &Tier, options: EngineOptions) -> Result<QueryEngine> {
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .with_memory_limit(options.memory_limit, 1.0)
            .build_arc()?;
        let config =
            SessionConfig::new().with_target_partitions(options.target_partitions).with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let store_url = url::Url::parse(hot.store_url().as_str())
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        ctx.register_object_store(&store_url, hot.store().clone());
        for dataset in Dataset::ALL {
            hot.ensure_dir(dataset.name()).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let url = ListingTableUrl::parse(hot.dir_url(dataset.name()))?;
            let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![
                    ("date".to_string(), DataType::Utf8),
                    ("hour".to_string(), DataType::Utf8),
                ]);
            let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(schema(dataset));
            ctx.register_table(dataset.name(), Arc::new(ListingTable::try_new(config)?))?;
        }
        // Roll-ups: `metric_rollups/resolution=1m/date=…/hour=…/…parquet`.
        hot.ensure_dir(ROLLUP_TABLE).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let url = ListingTableUrl::parse(hot.dir_url(ROLLUP_TABLE))?;
        let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![
                ("resolution".to_string(), DataType::Utf8),
                ("date".to_string(), DataType::Utf8),
                ("hour".to_string(), DataType::Utf8),
            ]);
        let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(rollup_schema());
        ctx.register_table(ROLLUP_TABLE, Arc::new(ListingTable::try_new(config)?))?;
        Ok(QueryEngine { ctx, memory_limit: options.memory_limit })
    }

    /// A session for one query: the registered tables and object stores, and a memory pool
    /// of its own.
    pub fn session(&self) -> SessionContext {
        let state = self.ctx.state();
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_limit(self.memory_limit, 1.0)
            .build_arc();
        match runtime {
            Ok(runtime) => SessionContext::new_with_state(
                SessionStateBuilder::new_from_existing(state).with_runtime_env(runtime).build(),
            ),
            Err(e) => {
                // Building a runtime from a working one only fails if its temp directory
                // vanished; the shared session still answers.
                tracing::warn!(error = %e, "per-query runtime failed; using the shared session");
                self.ctx.clone()
            }
        }
    }
}
