//! Writes a sorted stream of rows as lifecycle files of one unit: rolling to a new file
//! every `target_rows`, with the layout the query patterns want (zstd, row groups sized
//! for series pruning, page indexes, bloom filters on lookup columns, delta-encoded time),
//! and the statistics the catalog keeps per file.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::dense::{chain_order, densify_with, newest_first, only_grows, series_scales};
use crate::Result;
use crate::file_catalog::{CatalogFile, DataTable, lifecycle_file_key};
use crate::tier::Tier;
use crate::tiers::TierName;

/// How lifecycle files are laid out.
#[derive(Debug, Clone, Copy)]
pub struct FileLayout {
    /// Rows per file before the writer starts the next one.
    pub target_rows: usize,
    /// Rows per row group (the unit the reader skips by statistics and bloom filters).
    pub row_group_rows: usize,
    /// Rows per data page at most (pages also end at 1 MB). Small pages let a reader skip
    /// within a row group by the page index; one page per column chunk compresses far
    /// better (zstd sees the whole chunk, a delta-encoded page stores its first value and
    /// headers once): cold files took 6 % fewer bytes, archive files 7 %.
    pub page_rows: usize,
    pub zstd_level: i32,
    /// Measurement columns as exact decimals where possible ([`super::dense`]); a file is
    /// then held in memory until it is complete (keep `target_rows` moderate).
    pub dense: bool,
}

impl Default for FileLayout {
    /// Warm: 256 k-row row groups (over 64 k-row ones, a query spent about 8 % of its time
    /// creating and zeroing zstd contexts, which the Parquet reader makes per column
    /// chunk), of 20 000-row pages for the page index to skip within them.
    fn default() -> Self {
        FileLayout {
            target_rows: 4_000_000,
            row_group_rows: 256 * 1024,
            page_rows: 20_000,
            zstd_level: 3,
            dense: false,
        }
    }
}

fn properties(table: DataTable, schema: &SchemaRef, layout: &FileLayout) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(layout.zstd_level)?;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .set_data_page_row_count_limit(layout.page_rows)
        .set_created_by(format!("callscope {} lifecycle", env!("CARGO_PKG_VERSION")));
    // Sorted by series and time, times, offsets and counts step by small amounts (in dense
    // files the decimal measurements too).
    builder = crate::parquet_file::delta_encode_integers(builder, schema, layout.dense);
    for column in table.bloom_filter_columns() {
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from(*column), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(*column), 0.01);
    }
    // Dense files chain their series within the first sort column ([`super::dense`]).
    let sorted = if chains_series(table, layout) { &table.sort_columns()[..1] } else { table.sort_columns() };
    let sorting: Vec<SortingColumn> = sorted
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn { column_idx: i as i32, descending: false, nulls_first: false })
        .collect();
    Ok(builder.set_sorting_columns(Some(sorting)).build())
}

/// Whether files of `layout` reorder the series inside the first sort column (dense files
/// of tables whose series have more than one key column).
fn chains_series(table: DataTable, layout: &FileLayout) -> bool {
    layout.dense && table.series_columns().len() > 1 && table.sort_columns().first() == table.series_columns().first()
}

struct OpenFile {
    /// The streaming writer, or (dense layout) the series held until the file is complete.
    writer: Option<AsyncArrowWriter<BufWriter>>,
    held: Vec<Vec<RecordBatch>>,
    /// Dense layout: the decimal scale of each column in this file.
    scales: Vec<Option<i8>>,
    key: String,
    rows: u64,
    min_time: i64,
    max_time: i64,
    series: u64,
}

/// The rolling writer.
pub struct SortedFileWriter {
    tier: Tier,
    tier_name: TierName,
    table: DataTable,
    unit: String,
    generation: u64,
    job: String,
    schema: SchemaRef,
    props: WriterProperties,
    layout: FileLayout,
    series: RowConverter,
    series_columns: Vec<usize>,
    last_series: Option<OwnedRow>,
    open: Option<OpenFile>,
    /// Dense layout: the rows of the series being read, then one open file per set of
    /// column scales.
    run: Vec<RecordBatch>,
    dense_files: BTreeMap<Vec<Option<i8>>, OpenFile>,
    /// Files opened so far (numbers their names).
    opened: usize,
    written: Vec<CatalogFile>,
}

impl SortedFileWriter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tier: Tier,
        tier_name: TierName,
        table: DataTable,
        unit: &str,
        generation: u64,
        job: &str,
        layout: FileLayout,
    ) -> Result<SortedFileWriter> {
        let schema = table.file_schema();
        let series_columns: Vec<usize> =
            table.series_columns().iter().filter_map(|c| schema.index_of(c).ok()).collect();
        let series = RowConverter::new(
            series_columns.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect(),
        )?;
        Ok(SortedFileWriter {
            props: properties(table, &schema, &layout)?,
            tier,
            tier_name,
            table,
            unit: unit.to_string(),
            generation,
            job: job.to_string(),
            schema,
            layout,
            series,
            series_columns,
            last_series: None,
            open: None,
            run: Vec::new(),
            dense_files: BTreeMap::new(),
            opened: 0,
            written: Vec::new(),
        })
    }

    /// Appends rows (sorted, continuing the previous batch's order).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.layout.dense {
            return self.write_dense(batch).await;
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.open.as_ref().is_some_and(|f| f.rows as usize >= self.layout.target_rows) {
                self.close_file().await?;
            }
            if self.open.is_none() {
                self.open_file()?;
            }
            let room = self.layout.target_rows - self.open.as_ref().map_or(0, |f| f.rows as usize);
            let take = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, take);
            self.append(&slice).await?;
            offset += take;
        }
        Ok(())
    }

    fn open_file(&mut self) -> Result<()> {
        let key = lifecycle_file_key(&self.unit, self.generation, &self.job, self.opened);
        self.opened += 1;
        let writer =
            if self.layout.dense { None } else { Some(self.writer_for(&key, self.schema.clone(), &self.props)?) };
        self.open = Some(OpenFile {
            writer,
            held: Vec::new(),
            scales: Vec::new(),
            key,
            rows: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
            series: 0,
        });
        // A new file counts its first series afresh.
        self.last_series = None;
        Ok(())
    }

    fn writer_for(
        &self,
        key: &str,
        schema: SchemaRef,
        props: &WriterProperties,
    ) -> Result<AsyncArrowWriter<BufWriter>> {
        let object = BufWriter::new(self.tier.store().clone(), self.tier.path(key));
        Ok(AsyncArrowWriter::try_new(object, schema, Some(props.clone()))?)
    }

    async fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        let (time_column, units_per_ms) = self.table.time_column();
        let times = batch
            .column_by_name(time_column)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .map(|a| (arrow::compute::min(a), arrow::compute::max(a)));
        let columns: Vec<_> = self.series_columns.iter().map(|i| batch.column(*i).clone()).collect();
        let rows = self.series.convert_columns(&columns)?;
        let mut new_series = 0u64;
        let mut previous = self.last_series.as_ref().map(|r| r.row());
        for row in rows.iter() {
            if previous != Some(row) {
                new_series += 1;
            }
            previous = Some(row);
        }
        let last = previous.map(|r| r.owned());
        let Some(file) = self.open.as_mut() else { return Ok(()) };
        match file.writer.as_mut() {
            Some(writer) => writer.write(batch).await?,
            None => file.held.push(vec![batch.clone()]),
        }
        file.rows += batch.num_rows() as u64;
        file.series += new_series;
        if let Some((Some(min), Some(max))) = times {
            file.min_time = file.min_time.min(min.div_euclid(units_per_ms));
            file.max_time = file.max_time.max(max.div_euclid(units_per_ms));
        }
        self.last_series = last;
        Ok(())
    }

    /// Dense layout: cuts the stream into series and sends each whole series to the file
    /// of its scales.
    async fn write_dense(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns: Vec<_> = self.series_columns.iter().map(|i| batch.column(*i).clone()).collect();
        let rows = self.series.convert_columns(&columns)?;
        let mut starts = Vec::new();
        let mut previous = self.last_series.as_ref().map(|r| r.row());
        for (i, row) in rows.iter().enumerate() {
            if previous != Some(row) {
                starts.push(i);
            }
            previous = Some(row);
        }
        self.last_series = previous.map(|r| r.owned());
        let mut from = 0;
        for start in starts {
            if start > from {
                self.run.push(batch.slice(from, start - from));
            }
            self.route_run().await?;
            from = start;
        }
        if from < batch.num_rows() {
            self.run.push(batch.slice(from, batch.num_rows() - from));
        }
        Ok(())
    }

    /// Sends the series just read to the file of its scales (closing that file once full).
    async fn route_run(&mut self) -> Result<()> {
        if self.run.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(&mut self.run);
        let scales = series_scales(&self.schema, &run);
        let (time_column, units_per_ms) = self.table.time_column();
        if !self.dense_files.contains_key(&scales) {
            let key = lifecycle_file_key(&self.unit, self.generation, &self.job, self.opened);
            self.opened += 1;
            let file = OpenFile {
                writer: None,
                held: Vec::new(),
                scales: scales.clone(),
                key,
                rows: 0,
                min_time: i64::MAX,
                max_time: i64::MIN,
                series: 0,
            };
            self.dense_files.insert(scales.clone(), file);
        }
        let Some(file) = self.dense_files.get_mut(&scales) else { return Ok(()) };
        file.series += 1;
        for batch in &run {
            if let Some(a) = batch.column_by_name(time_column).and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                && let (Some(min), Some(max)) = (arrow::compute::min(a), arrow::compute::max(a))
            {
                file.min_time = file.min_time.min(min.div_euclid(units_per_ms));
                file.max_time = file.max_time.max(max.div_euclid(units_per_ms));
            }
            file.rows += batch.num_rows() as u64;
        }
        file.held.push(run);
        if file.rows as usize >= self.layout.target_rows
            && let Some(file) = self.dense_files.remove(&scales)
        {
            self.close(file).await?;
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<()> {
        let Some(file) = self.open.take() else { return Ok(()) };
        self.close(file).await
    }

    async fn close(&mut self, mut file: OpenFile) -> Result<()> {
        let mut writer = match file.writer.take() {
            Some(writer) => writer,
            None => {
                let held = std::mem::take(&mut file.held);
                let held =
                    if chains_series(self.table, &self.layout) { self.chained(held, &file.scales)? } else { held };
                let held: Vec<RecordBatch> = held.into_iter().flatten().collect();
                let (schema, batches) = densify_with(&self.schema, &held, &file.scales)?;
                let props = properties(self.table, &schema, &self.layout)?;
                let mut writer = self.writer_for(&file.key, schema, &props)?;
                for batch in &batches {
                    writer.write(batch).await?;
                }
                writer
            }
        };
        writer.finish().await?;
        let bytes = writer.bytes_written() as u64;
        self.tier.make_durable(&file.key).await?;
        self.written.push(CatalogFile {
            tier: self.tier_name,
            key: file.key,
            rows: file.rows,
            bytes,
            min_time_ms: if file.rows == 0 { 0 } else { file.min_time },
            max_time_ms: if file.rows == 0 { 0 } else { file.max_time },
            series: file.series,
            produced_by: self.job.clone(),
            shared_object_bytes: None,
        });
        Ok(())
    }

    /// The series of a dense file in chained order (by the first measurement column that
    /// has a decimal scale; as they came if none has).
    fn chained(&self, runs: Vec<Vec<RecordBatch>>, scales: &[Option<i8>]) -> Result<Vec<Vec<RecordBatch>>> {
        let Some(column) = scales
            .iter()
            .enumerate()
            .position(|(i, s)| s.is_some() && self.schema.field(i).data_type() == &DataType::Float64)
        else {
            return Ok(runs);
        };
        // Growing series (counters) newest first (see the module docs of `dense`).
        let runs: Vec<Vec<RecordBatch>> = runs
            .into_iter()
            .map(|run| if only_grows(&run, column) { newest_first(run) } else { Ok(run) })
            .collect::<Result<_>>()?;
        let group_column = self.series_columns[0];
        let group: Vec<String> = runs
            .iter()
            .map(|run| {
                run.first()
                    .filter(|b| b.num_rows() > 0)
                    .and_then(|b| arrow::util::display::array_value_to_string(b.column(group_column), 0).ok())
                    .unwrap_or_default()
            })
            .collect();
        let order = chain_order(&runs, &group, column);
        let mut runs: Vec<Option<Vec<RecordBatch>>> = runs.into_iter().map(Some).collect();
        Ok(order.into_iter().filter_map(|i| runs[i].take()).collect())
    }

    /// Finishes the last file; returns every file written.
    pub async fn finish(mut self) -> Result<Vec<CatalogFile>> {
        self.close_file().await?;
        self.route_run().await?;
        for (_, file) in std::mem::take(&mut self.dense_files) {
            self.close(file).await?;
        }
        Ok(self.written)
    }
}
