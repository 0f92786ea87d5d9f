//! A DataFusion table over the file catalog: every scan takes a fresh snapshot of the units
//! its time filters allow and reads their visible files from whichever tiers hold them.
//!
//! Each tier's store is registered in the session under a URL of its own
//! (`callscope-<tier>://tier`), so tiers on different stores (a local disk for hot, a
//! bucket for the rest) are read side by side in one plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result as DfResult, ScalarValue, project_schema};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use super::{DataTable, FileCatalog, TimeRange, UnitSnapshot};
use crate::tiers::{TierName, Tiers};

/// The URL a tier's store is registered under in a DataFusion session.
pub fn tier_store_url(tier: TierName) -> ObjectStoreUrl {
    // A constant, valid URL: parsing cannot fail.
    ObjectStoreUrl::parse(format!("callscope-{tier}://tier")).unwrap_or_else(|_| ObjectStoreUrl::local_filesystem())
}

/// Registers every tier's store in a runtime (once per session runtime).
pub fn register_tier_stores(runtime: &RuntimeEnv, tiers: &Tiers) {
    for (name, tier) in tiers.iter() {
        runtime.register_object_store(tier_store_url(name).as_ref(), tier.store().clone());
    }
}

/// The schema of a table as SQL sees it: the file columns, then the partition columns.
pub fn table_schema(table: DataTable) -> SchemaRef {
    with_partition_columns(table, &table.file_schema())
}

/// `file` (the file columns) followed by the table's partition columns.
fn with_partition_columns(table: DataTable, file: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = file.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(table.partition_columns().iter().map(|c| Field::new(*c, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

/// `schema` with its top-level strings read as string views (`Utf8View`): the Parquet
/// reader then points into each page's dictionary instead of copying every value, and
/// DataFusion groups and compares views faster (its own default for Parquet tables).
fn with_string_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// One catalog table registered in DataFusion.
#[derive(Debug)]
pub struct CatalogTable {
    catalog: FileCatalog,
    table: DataTable,
    schema: SchemaRef,
    /// The file columns as the scan reads them (strings as views when asked).
    file_schema: SchemaRef,
    /// A fixed set of units to read instead of a fresh snapshot per scan (lifecycle jobs).
    fixed: Option<Vec<UnitSnapshot>>,
}

impl CatalogTable {
    pub fn new(catalog: FileCatalog, table: DataTable) -> CatalogTable {
        CatalogTable { catalog, table, schema: table_schema(table), file_schema: table.file_schema(), fixed: None }
    }

    /// Reads string columns as string views (for queries; lifecycle rewrites keep the
    /// stored types).
    pub fn with_string_views(mut self) -> CatalogTable {
        self.file_schema = with_string_views(&self.table.file_schema());
        self.schema = with_partition_columns(self.table, &self.file_schema);
        self
    }

    /// A table that reads exactly the files of `units`, as they were when taken.
    pub fn of_units(catalog: FileCatalog, table: DataTable, units: Vec<UnitSnapshot>) -> CatalogTable {
        CatalogTable {
            catalog,
            table,
            schema: table_schema(table),
            file_schema: table.file_schema(),
            fixed: Some(units),
        }
    }
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // The filters narrow the units listed; the rows are still filtered above the scan
        // (and inside the Parquet reader, by statistics and bloom filters).
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(units) = &self.fixed {
            return scan_units(state, self.catalog.tiers(), self.table, &self.file_schema, units, projection, limit)
                .await;
        }
        let range = TimeRange::from_filters(self.table, filters);
        let units = if range.is_empty() {
            Vec::new()
        } else {
            let bounded = range != TimeRange::default();
            self.catalog
                .snapshot(self.table, bounded.then_some(range))
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
        };
        scan_units(state, self.catalog.tiers(), self.table, &self.file_schema, &units, projection, limit).await
    }
}

/// A plan that reads the visible files of `units` (the rows of those table-hours, each
/// exactly once), with the partition columns filled from each unit's directory, and the
/// file columns read as `file_schema` says.
#[allow(clippy::too_many_arguments)]
pub async fn scan_units(
    state: &dyn Session,
    tiers: &Tiers,
    table: DataTable,
    file_schema: &SchemaRef,
    units: &[UnitSnapshot],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut by_tier: BTreeMap<TierName, Vec<PartitionedFile>> = BTreeMap::new();
    for unit in units {
        let values: Vec<ScalarValue> =
            unit.partition_values(table).into_iter().map(|v| ScalarValue::Utf8(Some(v))).collect();
        for file in unit.files() {
            let path = tiers.get(file.tier).path(&file.key).to_string();
            by_tier
                .entry(file.tier)
                .or_default()
                .push(PartitionedFile::new(path, file.size).with_partition_values(values.clone()));
        }
    }
    if by_tier.is_empty() {
        let schema = project_schema(&with_partition_columns(table, file_schema), projection)?;
        return Ok(Arc::new(EmptyExec::new(schema)));
    }
    // The session's Parquet options (filter pushdown, bloom filters, …).
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let partition_fields: Vec<Arc<Field>> =
        table.partition_columns().iter().map(|c| Arc::new(Field::new(*c, DataType::Utf8, false))).collect();
    let target = state.config().target_partitions().max(1);
    let mut plans = Vec::with_capacity(by_tier.len());
    for (tier, mut files) in by_tier {
        let source = format.file_source(
            TableSchema::builder(file_schema.clone()).with_table_partition_cols(partition_fields.clone()).build(),
        );
        // Largest first into the lightest group: groups of similar size.
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); target.min(files.len())];
        for file in files {
            if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
                lightest.0 += file.object_meta.size;
                lightest.1.push(file);
            }
        }
        let config = FileScanConfigBuilder::new(tier_store_url(tier), source)
            .with_file_groups(groups.into_iter().map(|(_, files)| FileGroup::new(files)).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        plans.push(format.create_physical_plan(state, config).await?);
    }
    UnionExec::try_new(plans)
}
