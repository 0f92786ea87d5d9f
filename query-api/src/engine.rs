//! The DataFusion session: one table per dataset, and `metric_rollups` (partition columns
//! `resolution`, `date`, `hour`), each over the file catalog of the four tiers
//! ([`callscope_storage::file_catalog`]).
//!
//! Every scan takes a fresh snapshot of the catalog, so files written by the workers and
//! moved by the lifecycle are visible without a restart, each row exactly once. Time
//! filters (`timestamp_ms`, `event_time`, `date`, …) limit the table-hours listed and read.
//!
//! Every query runs in its own [`QueryEngine::session`], whose memory pool holds
//! `memory_limit` bytes: one heavy query fails with "resources exhausted" (a 422) instead of
//! starving every other query of a shared pool.

use std::sync::Arc;

use callscope_storage::file_catalog::table::{CatalogTable, register_tier_stores};
use callscope_storage::{DataTable, FileCatalog, Tiers};
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::run_aggregate::RunAwarePartialAggregation;

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
    /// Evaluate filters inside the Parquet reader, column by column (late
    /// materialisation): rows a cheap column rules out are never decoded in the others.
    /// Off by default: two runs of `bench traces` disagreed (no gain, then a faster search
    /// and a slower dependency scan); the bench runs both ways.
    pub pushdown_filters: bool,
    /// Partial aggregation by runs of equal group keys where it applies
    /// ([`crate::run_aggregate`]); off only to measure against DataFusion's own.
    pub run_aggregation: bool,
}

impl EngineOptions {
    /// Memory one query may use, in MiB (the default of `--query-memory-mb`).
    pub const DEFAULT_MEMORY_MB: usize = 2048;
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memory_limit: Self::DEFAULT_MEMORY_MB << 20,
            target_partitions: 2,
            pushdown_filters: false,
            run_aggregation: true,
        }
    }
}

impl QueryEngine {
    /// A session over the file catalog of `tiers`: one table per dataset and
    /// `metric_rollups`, each reading from every tier what the catalog says is visible.
    pub fn new(tiers: &Tiers, options: EngineOptions) -> Result<QueryEngine> {
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(options.memory_limit, 1.0).build_arc()?;
        register_tier_stores(&runtime, tiers);
        // DataFusion's own settings from `DATAFUSION_*` environment variables (for example
        // `DATAFUSION_EXECUTION_BATCH_SIZE`), then callscope's.
        let mut config =
            SessionConfig::from_env()?.with_target_partitions(options.target_partitions).with_information_schema(true);
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = options.pushdown_filters;
        parquet.reorder_filters = options.pushdown_filters;
        let mut state =
            SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features();
        if options.run_aggregation {
            state = state.with_physical_optimizer_rule(Arc::new(RunAwarePartialAggregation));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let catalog = FileCatalog::new(tiers.clone());
        for table in DataTable::ALL {
            ctx.register_table(table.name(), Arc::new(CatalogTable::new(catalog.clone(), table).with_string_views()))?;
        }
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
