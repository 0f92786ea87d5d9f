//! Partial aggregation by runs of equal group keys.
//!
//! The lifecycle's files are sorted by series and time, so a `GROUP BY name, service` over
//! them meets each combination of keys in long runs (one series-hour of 15 s samples is 240
//! rows). DataFusion's partial hash aggregation hashes and compares the keys of every row.
//! [`RunAggregateExec`] finds the runs first (a comparison of neighbouring keys, vectorised
//! by arrow's `partition` kernel), looks up one group per run, and feeds DataFusion's own
//! `GroupsAccumulator`s with every row's group. Its output is the partial aggregate's (the
//! group keys, then each accumulator's state), so the final aggregation above it is
//! DataFusion's, unchanged.
//!
//! Where runs are short (fresh unsorted files, keys that change every few rows) it emits
//! what it holds and hands the rest of its input to DataFusion's partial aggregation. A
//! group may then leave the partial stage more than once, as it does when DataFusion's own
//! partial aggregation spills or emits early; the final stage merges the states.
//!
//! It holds at most [`EMIT_AT_GROUPS`] groups, and their memory is reserved in the
//! query's pool; when either is full, the partial states go out and the table starts
//! empty.
//!
//! [`RunAwarePartialAggregation`] puts it in place of a partial `AggregateExec` whose group
//! keys are plain columns of string, integer, boolean or temporal types, without grouping
//! sets, DISTINCT, ordered aggregates or a row limit, whose input is not known to be sorted
//! on its keys (DataFusion streams that case itself), and whose aggregates all have
//! `GroupsAccumulator`s. `EXPLAIN` shows `RunAggregateExec`.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{partition, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    ReplaceChildrenOptions, replace_children_if_necessary,
};
use futures::{StreamExt, TryStreamExt};

/// Below this many rows per run on average, DataFusion's vectorised hashing of every row
/// is cheaper than a lookup per run: the rest of the input goes to it.
const MIN_AVERAGE_RUN: usize = 8;

/// Groups held before the partial states are emitted (bounded memory; the final stage
/// merges a group that is emitted more than once).
const EMIT_AT_GROUPS: usize = 64 * 1024;

/// The physical optimizer rule that puts [`RunAggregateExec`] where it applies.
#[derive(Debug, Default)]
pub struct RunAwarePartialAggregation;

impl PhysicalOptimizerRule for RunAwarePartialAggregation {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let applies = node.downcast_ref::<AggregateExec>().is_some_and(|agg| applies_to(agg));
            if !applies {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(Arc::new(RunAggregateExec::new(node)?) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "run_aware_partial_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `agg` is a partial aggregation [`RunAggregateExec`] computes exactly.
fn applies_to(agg: &AggregateExec) -> bool {
    let input = agg.input().schema();
    let keys_are_columns = agg.group_expr().expr().iter().all(|(expr, _)| {
        expr.downcast_ref::<Column>()
            .and_then(|c| input.fields().get(c.index()))
            .is_some_and(|f| key_type_supported(f.data_type()))
    });
    // Input already sorted on the keys: DataFusion streams it by order (and the plan above
    // may count on the order of its output).
    *agg.mode() == AggregateMode::Partial
        && *agg.input_order_mode() == InputOrderMode::Linear
        && agg.group_expr().is_single()
        && !agg.group_expr().expr().is_empty()
        && keys_are_columns
        && agg.limit_options().is_none()
        && agg.dynamic_expressions_produced().is_empty()
        && agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported() && !a.is_distinct() && a.order_bys().is_empty())
}

/// Key types whose equality the row format and the `partition` kernel decide exactly as
/// DataFusion's grouping does (no floats: their signed zeros and NaNs; no dictionaries:
/// the row format returns their values' type).
fn key_type_supported(data_type: &DataType) -> bool {
    use DataType::*;
    data_type.is_integer()
        || data_type.is_temporal()
        || matches!(data_type, Boolean | Utf8 | Utf8View | LargeUtf8 | Binary | BinaryView | LargeBinary)
}

/// A partial aggregation that looks up one group per run of equal keys (module docs).
#[derive(Debug)]
pub struct RunAggregateExec {
    /// The partial `AggregateExec` it stands for (its input, expressions and properties;
    /// and what runs when runs are short).
    aggregate: Arc<AggregateExec>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    /// Stands for `aggregate`, a partial `AggregateExec`.
    pub fn new(aggregate: Arc<dyn ExecutionPlan>) -> Result<RunAggregateExec> {
        let Some(aggregate) = aggregate.downcast_ref::<AggregateExec>() else {
            return Err(datafusion::error::DataFusionError::Internal("RunAggregateExec needs an AggregateExec".into()));
        };
        let properties = Arc::clone(aggregate.properties());
        Ok(RunAggregateExec {
            aggregate: Arc::new(aggregate.clone()),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn agg(&self) -> &AggregateExec {
        &self.aggregate
    }

    fn aggregate_plan(&self) -> Arc<dyn ExecutionPlan> {
        Arc::clone(&self.aggregate) as Arc<dyn ExecutionPlan>
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let agg = self.agg();
        let keys: Vec<&str> = agg.group_expr().expr().iter().map(|(_, name)| name.as_str()).collect();
        let aggregates: Vec<&str> = agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(f, "RunAggregateExec: mode=Partial, gby=[{}], aggr=[{}]", keys.join(", "), aggregates.join(", "))
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg().input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = replace_children_if_necessary(self.aggregate_plan(), children)?;
        Ok(Arc::new(RunAggregateExec::new(aggregate)?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let agg = self.agg();
        let input = agg.input().execute(partition, Arc::clone(&context))?;
        let table = RunTable::new(agg)?;
        let counters = Counters {
            baseline: BaselineMetrics::new(&self.metrics, partition),
            runs: MetricBuilder::new(&self.metrics).counter("runs", partition),
            handed_over: MetricBuilder::new(&self.metrics).counter("rows_handed_to_hash_aggregation", partition),
        };
        let reservation = MemoryConsumer::new(format!("RunAggregateExec[{partition}]")).register(context.memory_pool());
        let state =
            RunState { input: Some(input), table, aggregate: self.aggregate_plan(), context, counters, reservation };
        let schema = self.schema();
        let stream = futures::stream::try_unfold(state, RunState::next).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct Counters {
    baseline: BaselineMetrics,
    runs: Count,
    handed_over: Count,
}

/// One partition's progress: reading its input by runs, then (if runs got short) passing
/// DataFusion's partial aggregation of the rest through.
struct RunState {
    /// `None` once it is exhausted or handed over.
    input: Option<SendableRecordBatchStream>,
    table: RunTable,
    aggregate: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    counters: Counters,
    /// The table's memory, in the query's pool: when the pool refuses more, what is held
    /// is emitted (as DataFusion's partial aggregation does).
    reservation: MemoryReservation,
}

type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

impl RunState {
    /// The next piece of output: a batch of states, or DataFusion's stream for the rest.
    async fn next(mut self) -> Result<Option<(BatchStream, RunState)>> {
        loop {
            let Some(input) = self.input.as_mut() else { return Ok(None) };
            let Some(batch) = input.next().await.transpose()? else { break };
            let timer = self.counters.baseline.elapsed_compute().timer();
            let runs = self.table.aggregate(&batch)?;
            timer.done();
            let Some(runs) = runs else {
                // Short runs: what is held goes out, then DataFusion aggregates this batch
                // and the rest of the input.
                let Some(rest) = self.input.take() else { return Ok(None) };
                let rest = self.hand_over(batch, rest)?;
                let held = self.emit()?;
                return Ok(Some((futures::stream::iter(held.map(Ok)).chain(rest).boxed(), self)));
            };
            self.counters.runs.add(runs);
            let full = self.table.groups.num_rows() >= EMIT_AT_GROUPS
                || self.reservation.try_resize(self.table.size()).is_err();
            if full && let Some(batch) = self.emit()? {
                return Ok(Some((futures::stream::iter([Ok(batch)]).boxed(), self)));
            }
        }
        self.input = None;
        let held = self.emit()?;
        Ok(held.map(|batch| (futures::stream::iter([Ok(batch)]).boxed(), self)))
    }

    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        let batch = self.table.emit()?;
        self.reservation.free();
        if let Some(batch) = &batch {
            self.counters.baseline.record_output(batch.num_rows());
        }
        Ok(batch)
    }

    /// DataFusion's partial aggregation over `first` and then `rest`.
    fn hand_over(&self, first: RecordBatch, rest: SendableRecordBatchStream) -> Result<BatchStream> {
        let schema = rest.schema();
        let handed_over = self.counters.handed_over.clone();
        let input = futures::stream::iter([Ok(first)]).chain(rest).inspect(move |batch| {
            if let Ok(batch) = batch {
                handed_over.add(batch.num_rows());
            }
        });
        let source = Arc::new(HandedOver {
            schema: Arc::clone(&schema),
            stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(schema.clone(), input)))),
        });
        let scan = Arc::new(StreamingTableExec::try_new(schema, vec![source], None, vec![], false, None)?);
        let aggregate = replace_children_if_necessary(Arc::clone(&self.aggregate), vec![scan])?;
        Ok(aggregate.execute(0, Arc::clone(&self.context))?.boxed())
    }
}

/// The rest of one partition's input, as a one-partition source for DataFusion's own
/// partial aggregation.
struct HandedOver {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for HandedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandedOver")
    }
}

impl PartitionStream for HandedOver {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(stream) => stream,
            // Executed once by construction; a second time reads nothing.
            None => Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), futures::stream::empty())),
        }
    }
}

/// The groups met so far, keyed by their keys in arrow's row format, and DataFusion's
/// accumulators over them.
struct RunTable {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    converter: RowConverter,
    groups: Rows,
    index: foldhash::HashMap<Box<[u8]>, usize>,
    group_of_row: Vec<usize>,
    schema: SchemaRef,
}

impl RunTable {
    fn new(agg: &AggregateExec) -> Result<RunTable> {
        let input = agg.input().schema();
        let keys: Vec<Arc<dyn PhysicalExpr>> = agg.group_expr().expr().iter().map(|(e, _)| Arc::clone(e)).collect();
        let fields = keys.iter().map(|k| k.data_type(&input).map(SortField::new)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(fields)?;
        let arguments = agg.aggr_expr().iter().map(|a| a.expressions()).collect();
        let accumulators = agg.aggr_expr().iter().map(|a| a.create_groups_accumulator()).collect::<Result<_>>()?;
        Ok(RunTable {
            keys,
            arguments,
            filters: agg.filter_expr().to_vec(),
            accumulators,
            groups: converter.empty_rows(0, 0),
            converter,
            index: Default::default(),
            group_of_row: Vec::new(),
            schema: agg.schema(),
        })
    }

    /// Adds `batch`; the number of runs it held, or `None` (nothing added) when its runs
    /// are too short to be worth it.
    fn aggregate(&mut self, batch: &RecordBatch) -> Result<Option<usize>> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Some(0));
        }
        let keys = evaluate_expressions_to_arrays(&self.keys, batch)?;
        let runs: Vec<Range<usize>> = partition(&keys)?.ranges();
        if runs.len() * MIN_AVERAGE_RUN > rows {
            return Ok(None);
        }
        let starts = UInt32Array::from_iter_values(runs.iter().map(|r| r.start as u32));
        let firsts = keys.iter().map(|k| take(k, &starts, None)).collect::<Result<Vec<_>, _>>()?;
        let first_rows = self.converter.convert_columns(&firsts)?;
        self.group_of_row.clear();
        for (run, row) in runs.iter().zip(first_rows.iter()) {
            let group = match self.index.get(row.as_ref()) {
                Some(group) => *group,
                None => {
                    let group = self.groups.num_rows();
                    self.groups.push(row);
                    self.index.insert(row.as_ref().into(), group);
                    group
                }
            };
            self.group_of_row.extend(std::iter::repeat_n(group, run.len()));
        }
        let total = self.groups.num_rows();
        for ((accumulator, arguments), filter) in self.accumulators.iter_mut().zip(&self.arguments).zip(&self.filters) {
            let values = evaluate_expressions_to_arrays(arguments, batch)?;
            let filter = match filter {
                Some(filter) => Some(filter.evaluate(batch)?.into_array(rows)?),
                None => None,
            };
            accumulator.update_batch(&values, &self.group_of_row, filter.as_ref().map(|f| f.as_boolean()), total)?;
        }
        Ok(Some(runs.len()))
    }

    /// Bytes held: the keys (in the rows and the index) and the accumulators' states.
    fn size(&self) -> usize {
        let index = self.index.capacity() * (std::mem::size_of::<(Box<[u8]>, usize)>() + 1);
        2 * self.groups.size() + index + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// The partial states of every group held (keys, then each accumulator's state), and
    /// an empty table.
    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.groups.num_rows() == 0 {
            return Ok(None);
        }
        let mut columns = self.converter.convert_rows(self.groups.iter())?;
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        self.groups = self.converter.empty_rows(0, 0);
        self.index.clear();
        Ok(Some(RecordBatch::try_new(Arc::clone(&self.schema), columns)?))
    }
}

#[cfg(test)]
mod tests;
