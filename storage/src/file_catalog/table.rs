//! A DataFusion table over the file catalog: every scan takes a fresh snapshot of the units
//! its time filters allow and reads their visible files from whichever tiers hold them.
//!
//! Each tier's store is registered in the session under a URL of its own
//! (`callscope-<tier>://tier`), so tiers on different stores (a local disk for hot, a
//! bucket for the rest) are read side by side in one plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue, project_schema};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, when};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{col, lit};

use super::{DataTable, FileCatalog, TimeRange, UnitSnapshot};
use crate::layout::HourPartition;
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
    // Shared files: tier and path → size, the partition values alike in all their rows, and
    // the hours of the units that name them.
    let mut shared: BTreeMap<(TierName, String), (u64, Vec<String>, BTreeSet<(i64, i64)>)> = BTreeMap::new();
    for unit in units {
        let values = unit.partition_values(table);
        let scalars: Vec<ScalarValue> = values.iter().map(|v| ScalarValue::Utf8(Some(v.clone()))).collect();
        for file in unit.files() {
            let path = tiers.get(file.tier).path(&file.key).to_string();
            if file.shared {
                // Read once for every unit that names it, each unit's hour only.
                let entry = shared
                    .entry((file.tier, path))
                    .or_insert_with(|| (file.size, constant_values(table, &values), BTreeSet::new()));
                entry.2.insert((unit.hour.start_ms(), unit.hour.end_ms()));
                continue;
            }
            by_tier
                .entry(file.tier)
                .or_default()
                .push(PartitionedFile::new(path, file.size).with_partition_values(scalars.clone()));
        }
    }
    // One scan per set of files named by the same hours (a day's files, or, while a day is
    // packed again, its old files and its new ones, each named by some of its hours).
    let mut groups: BTreeMap<(TierName, Vec<String>, BTreeSet<(i64, i64)>), BTreeMap<String, u64>> = BTreeMap::new();
    for ((tier, path), (size, constants, hours)) in shared {
        groups.entry((tier, constants, hours)).or_default().insert(path, size);
    }
    let mut plans = Vec::with_capacity(by_tier.len() + groups.len());
    for ((tier, constants, hours), files) in groups {
        let files = SharedFiles { files, hours };
        plans.push(scan_shared(state, table, file_schema, tier, &constants, files, projection).await?);
    }
    if by_tier.is_empty() && plans.is_empty() {
        let schema = project_schema(&with_partition_columns(table, file_schema), projection)?;
        return Ok(Arc::new(EmptyExec::new(schema)));
    }
    // The session's Parquet options (filter pushdown, bloom filters, …).
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let partition_fields: Vec<Arc<Field>> =
        table.partition_columns().iter().map(|c| Arc::new(Field::new(*c, DataType::Utf8, false))).collect();
    let target = state.config().target_partitions().max(1);
    for (tier, mut files) in by_tier {
        let source = format.file_source(
            TableSchema::builder(file_schema.clone()).with_table_partition_cols(partition_fields.clone()).build(),
        );
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let config = FileScanConfigBuilder::new(tier_store_url(tier), source)
            .with_file_groups(balanced_groups(files, target))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        plans.push(format.create_physical_plan(state, config).await?);
    }
    UnionExec::try_new(plans)
}

/// Files largest first into the lightest of `target` groups: groups of similar size.
fn balanced_groups(files: Vec<PartitionedFile>, target: usize) -> Vec<FileGroup> {
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); target.min(files.len())];
    for file in files {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += file.object_meta.size;
            lightest.1.push(file);
        }
    }
    groups.into_iter().map(|(_, files)| FileGroup::new(files)).collect()
}

/// Shared files of one tier, alike in their constant partition values and named by the
/// same hours (`[start, end)` in ms).
struct SharedFiles {
    files: BTreeMap<String, u64>,
    hours: BTreeSet<(i64, i64)>,
}

/// A unit's partition values with the `hour` blanked: the values that every row of a
/// shared file (a day's file) has alike.
fn constant_values(table: DataTable, values: &[String]) -> Vec<String> {
    table
        .partition_columns()
        .iter()
        .zip(values)
        .map(|(column, value)| if *column == "hour" { String::new() } else { value.clone() })
        .collect()
}

/// Reads shared files (a day of table-hours in one file each, see
/// [`crate::lifecycle::day_files`]) named by the same hours: each once, keeping the rows
/// of those hours only, with the `hour` partition column taken from each row's time and the others from
/// `constants`.
async fn scan_shared(
    state: &dyn Session,
    table: DataTable,
    file_schema: &SchemaRef,
    tier: TierName,
    constants: &[String],
    files: SharedFiles,
    projection: Option<&Vec<usize>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let source = format.file_source(TableSchema::builder(file_schema.clone()).build());
    let hours = files.hours;
    let files: Vec<PartitionedFile> = files_by_size(files.files);
    let target = state.config().target_partitions().max(1);
    let config = FileScanConfigBuilder::new(tier_store_url(tier), source)
        .with_file_groups(balanced_groups(files, target))
        .build();
    let scan = format.create_physical_plan(state, config).await?;

    let (time_column, units_per_ms) = table.time_column();
    let time = col(time_column);
    // Adjacent hours merged into one range.
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &(start, end) in &hours {
        match ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => ranges.push((start, end)),
        }
    }
    let in_hours = ranges
        .iter()
        .map(|&(start, end)| {
            time.clone()
                .gt_eq(lit(start.saturating_mul(units_per_ms)))
                .and(time.clone().lt(lit(end.saturating_mul(units_per_ms))))
        })
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    let df_schema = DFSchema::try_from(file_schema.as_ref().clone())?;
    let filter = Arc::new(FilterExec::try_new(state.create_physical_expr(in_hours, &df_schema)?, scan)?);

    // Each row's hour, as a CASE of literals (never null, as the partition column is
    // declared): the filter above keeps rows of `hours` only.
    let mut hour_names = hours.iter().map(|&(start, end)| (end, HourPartition::of_unix_ms(start).hour));
    let hour = match hour_names.next_back() {
        Some((_, last)) => {
            let mut branches = hour_names.map(|(end, h)| (time.clone().lt(lit(end.saturating_mul(units_per_ms))), h));
            match branches.next() {
                Some((first, h)) => {
                    let mut case = when(first, lit(format!("{h:02}")));
                    for (condition, h) in branches {
                        case = case.when(condition, lit(format!("{h:02}")));
                    }
                    case.otherwise(lit(format!("{last:02}")))?
                }
                None => lit(format!("{last:02}")),
            }
        }
        None => lit(""),
    };
    let mut columns: Vec<(Expr, String)> =
        file_schema.fields().iter().map(|f| (col(f.name()), f.name().clone())).collect();
    for (column, constant) in table.partition_columns().iter().zip(constants) {
        let value = if *column == "hour" { hour.clone() } else { lit(constant.clone()) };
        columns.push((value, column.to_string()));
    }
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..columns.len()).collect(),
    };
    let mut exprs = Vec::with_capacity(wanted.len());
    for i in wanted {
        let (expr, name) = columns.get(i).cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("no column {i} in table {}", table.name()))
        })?;
        exprs.push((state.create_physical_expr(expr, &df_schema)?, name));
    }
    Ok(Arc::new(ProjectionExec::try_new(exprs, filter)?))
}

fn files_by_size(files: BTreeMap<String, u64>) -> Vec<PartitionedFile> {
    let mut files: Vec<PartitionedFile> =
        files.into_iter().map(|(path, size)| PartitionedFile::new(path, size)).collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    files
}
