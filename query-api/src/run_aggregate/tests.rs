//! The run-aware partial aggregation answers exactly what DataFusion's own does, on input
//! of long runs, short runs, both, and more groups than it holds at once.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, StringViewArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{RunAggregateExec, RunAwarePartialAggregation};

/// A small deterministic generator (no dependency on a seed crate's stream).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8View, false),
        Field::new("service", DataType::Utf8, true),
        Field::new("code", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// `rows` rows whose keys stay the same for runs of `run` rows (`run` = 1: a new random
/// key every row), as batches of 1000. Values are quarters, so every sum is exact in any
/// order. `distinct` bounds the key combinations.
fn rows(random: &mut Lcg, rows: usize, run: std::ops::Range<u64>, distinct: u64) -> Vec<RecordBatch> {
    let (mut names, mut services, mut codes, mut values) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while names.len() < rows {
        let key = random.next(distinct);
        // Names both inline in a view (≤ 12 bytes) and not.
        let name = if key % 2 == 0 { format!("m{key}") } else { format!("asr_latency_ms_{key}") };
        // A service independent of the name: a run may change either key alone.
        let service = random.next(4);
        let service = (service != 0).then(|| format!("svc{service}"));
        let length = run.start + random.next(run.end - run.start);
        for _ in 0..length {
            names.push(name.clone());
            services.push(service.clone());
            codes.push(key as i64 % 5);
            let value = random.next(4000) as f64 / 4.0;
            values.push((random.next(10) != 0).then_some(value));
        }
    }
    names.truncate(rows);
    let mut batches = Vec::new();
    for start in (0..rows).step_by(1000) {
        let end = (start + 1000).min(rows);
        batches.push(
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringViewArray::from_iter_values(names[start..end].iter())),
                    Arc::new(StringArray::from(services[start..end].to_vec())),
                    Arc::new(Int64Array::from(codes[start..end].to_vec())),
                    Arc::new(Float64Array::from(values[start..end].to_vec())),
                ],
            )
            .expect("batch"),
        );
    }
    batches
}

fn context(partitions: Vec<Vec<RecordBatch>>, run_aggregation: bool) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(2).with_batch_size(1000);
    let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
    if run_aggregation {
        state = state.with_physical_optimizer_rule(Arc::new(RunAwarePartialAggregation));
    }
    let ctx = SessionContext::new_with_state(state.build());
    let table = MemTable::try_new(schema(), partitions).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
    ctx
}

/// The query's answer as text, its plan, and the rows the run-aware operators handed to
/// DataFusion's hash aggregation.
async fn answer(ctx: &SessionContext, sql: &str) -> (String, String, usize) {
    let plan = ctx.sql(sql).await.expect("plan").create_physical_plan().await.expect("physical plan");
    let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
    let shown = displayable(plan.as_ref()).indent(false).to_string();
    let text = pretty_format_batches(&batches).expect("format").to_string();
    (text, shown, handed_over(&plan))
}

fn handed_over(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .downcast_ref::<RunAggregateExec>()
        .and_then(|p| p.metrics())
        .and_then(|m| m.sum_by_name("rows_handed_to_hash_aggregation"))
        .map_or(0, |v| v.as_usize());
    own + plan.children().into_iter().map(handed_over).sum::<usize>()
}

const BY_NAME_AND_SERVICE: &str = "SELECT name, service, COUNT(*) AS n, SUM(value) AS total, AVG(value) AS mean, \
     MIN(value) AS low, MAX(value) AS high, COUNT(value) AS present, SUM(value) FILTER (WHERE code > 2) AS filtered \
     FROM t GROUP BY name, service ORDER BY name, service";

const BY_CODE: &str = "SELECT code, COUNT(*) AS n, MAX(name) AS top FROM t GROUP BY code ORDER BY code";

/// DataFusion plans a lone DISTINCT aggregate as two plain aggregations, both run-aware.
const DISTINCT_NAMES: &str =
    "SELECT service, COUNT(DISTINCT name) AS names FROM t GROUP BY service ORDER BY service NULLS FIRST";

/// Both sessions' answers to every query; they must be equal, and the run-aware plan must
/// have used its operator. The rows each query handed to hash aggregation.
async fn same_answers(partitions: Vec<Vec<RecordBatch>>) -> Vec<usize> {
    let ours = context(partitions.clone(), true);
    let theirs = context(partitions, false);
    let mut handed = Vec::new();
    for sql in [BY_NAME_AND_SERVICE, BY_CODE, DISTINCT_NAMES] {
        let (expected, plan, _) = answer(&theirs, sql).await;
        assert!(!plan.contains("RunAggregateExec"), "{plan}");
        let (got, plan, rows) = answer(&ours, sql).await;
        assert!(plan.contains("RunAggregateExec: mode=Partial"), "the rule did not apply:\n{plan}");
        assert_eq!(got, expected, "{sql}\n{plan}");
        handed.push(rows);
    }
    handed
}

#[tokio::test]
async fn long_runs_are_aggregated_by_run_with_the_same_answer() {
    let mut random = Lcg(1);
    let partitions = vec![rows(&mut random, 20_000, 20..300, 40), rows(&mut random, 15_000, 50..500, 40)];
    // The DISTINCT query's upper stage reads the lower one's output, grouped by both keys
    // in hash order: short runs there.
    assert_eq!(same_answers(partitions).await[..2], [0, 0], "long runs stay with the run-aware aggregation");
}

#[tokio::test]
async fn short_runs_are_handed_to_hash_aggregation_with_the_same_answer() {
    let mut random = Lcg(2);
    // One partition turns short half way: what was held goes out first, then the rest.
    let mut turning = rows(&mut random, 10_000, 100..200, 30);
    turning.extend(rows(&mut random, 10_000, 1..2, 30));
    let partitions = vec![rows(&mut random, 12_000, 1..3, 30), turning];
    let handed = same_answers(partitions).await;
    assert!(handed.iter().all(|rows| *rows >= 22_000), "every query handed over the short runs: {handed:?}");
}

#[tokio::test]
async fn more_groups_than_are_held_at_once_are_emitted_in_parts_and_merged() {
    let mut random = Lcg(3);
    // More distinct keys than EMIT_AT_GROUPS, each met in runs of about ten.
    let distinct = 2 * super::EMIT_AT_GROUPS as u64;
    let partitions = vec![rows(&mut random, 800_000, 8..14, distinct), rows(&mut random, 300_000, 8..14, distinct)];
    assert_eq!(same_answers(partitions).await[..2], [0, 0]);
}

#[tokio::test]
async fn float_and_computed_keys_and_two_distincts_keep_datafusion_s_own_aggregation() {
    let mut random = Lcg(4);
    let ctx = context(vec![rows(&mut random, 5_000, 50..100, 10), rows(&mut random, 5_000, 50..100, 10)], true);
    for sql in [
        "SELECT name, COUNT(DISTINCT code), COUNT(DISTINCT service) FROM t GROUP BY name",
        "SELECT value, COUNT(*) FROM t GROUP BY value",
        "SELECT code + 1, COUNT(*) FROM t GROUP BY code + 1",
    ] {
        let (_, plan, _) = answer(&ctx, sql).await;
        assert!(!plan.contains("RunAggregateExec"), "{sql}\n{plan}");
    }
    // Input known to be sorted on the keys: DataFusion aggregates it in order.
    let partitions = vec![rows(&mut random, 5_000, 50..100, 10), rows(&mut random, 5_000, 50..100, 10)];
    let sorted = MemTable::try_new(schema(), partitions)
        .expect("table")
        .with_sort_order(vec![vec![datafusion::prelude::col("name").sort(true, false)]]);
    ctx.register_table("s", Arc::new(sorted)).expect("register");
    let (_, plan, _) = answer(&ctx, "SELECT name, COUNT(*) FROM s GROUP BY name").await;
    assert!(plan.contains("ordering_mode=Sorted") && !plan.contains("RunAggregateExec"), "{plan}");
}

#[tokio::test]
async fn sorted_parquet_files_are_aggregated_by_run_with_the_same_answer() {
    // Files as the lifecycle writes them: sorted by the keys, strings dictionary-encoded,
    // read back as string views, several row groups per file.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut random = Lcg(5);
    for file in 0..3 {
        let mut batches = rows(&mut random, 30_000, 100..400, 50);
        let all = arrow::compute::concat_batches(&schema(), &batches).expect("concat");
        let order = arrow::compute::lexsort_to_indices(
            &[
                arrow::compute::SortColumn { values: all.column(0).clone(), options: None },
                arrow::compute::SortColumn { values: all.column(1).clone(), options: None },
            ],
            None,
        )
        .expect("sort");
        batches = vec![arrow::compute::take_record_batch(&all, &order).expect("take")];
        let path = dir.path().join(format!("{file}.parquet"));
        let props = datafusion::parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(8_000))
            .build();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).expect("file"),
            schema(),
            Some(props),
        )
        .expect("writer");
        for batch in &batches {
            writer.write(batch).expect("write");
        }
        writer.close().expect("close");
    }
    let sessions = [context(vec![vec![]], true), context(vec![vec![]], false)];
    for ctx in &sessions {
        ctx.deregister_table("t").expect("deregister");
        ctx.register_parquet("t", dir.path().to_str().expect("path"), Default::default()).await.expect("register");
    }
    for sql in [BY_NAME_AND_SERVICE, BY_CODE] {
        let (expected, _, _) = answer(&sessions[1], sql).await;
        let (got, plan, handed) = answer(&sessions[0], sql).await;
        assert!(plan.contains("RunAggregateExec: mode=Partial"), "{plan}");
        assert_eq!(got, expected, "{sql}");
        if sql == BY_NAME_AND_SERVICE {
            assert_eq!(handed, 0, "sorted files are read in runs");
        }
    }
}
