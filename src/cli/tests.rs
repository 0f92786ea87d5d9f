use std::time::Duration;

use callscope_runtime::KafkaConnection;
use clap::{CommandFactory, Parser};

use super::*;

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn block_defaults_are_the_command_line_defaults() {
    let alerts: AlertArgs = defaults().expect("alert defaults");
    assert_eq!(*alerts.alert_replay, Duration::from_secs(35 * 60));
    assert_eq!(alerts.alert_replay.to_string(), "35m", "help shows the default as a duration");
    assert_eq!(*alerts.alert_eval_interval, Duration::from_millis(250));
    let ingest: IngestArgs = defaults().expect("ingest defaults");
    assert_eq!((ingest.group_id.as_str(), ingest.flush_rows), (ingest::DEFAULT_GROUP_ID, ingest::DEFAULT_FLUSH_ROWS));
    let windows: WindowArgs = defaults().expect("window defaults");
    assert_eq!(windows.resolutions_ms(), [60_000, 3_600_000], "10 s roll-ups are opt-in");
    // The alert evaluator keeps 10 s windows of its own whatever the workers store.
    let connection = KafkaConnection::new("127.0.0.1:1");
    let alerting = alerts.config(&connection, &windows, "test").expect("alerting on");
    assert_eq!(alerting.engine.resolution_ms, 10_000, "alerts do not wait for 1-minute windows");

    let Command::Pipeline(pipeline) = Cli::try_parse_from(["callscope", "pipeline"]).expect("pipeline parses").command
    else {
        panic!("not the pipeline command");
    };
    assert_eq!(pipeline.workers.alerts.alert_replay, alerts.alert_replay);
    assert_eq!(pipeline.workers.ingest.flush_rows, ingest.flush_rows);
}

#[test]
fn library_configs_are_built_from_the_flags() {
    let connection = KafkaConnection::new("127.0.0.1:1");
    let cli = Cli::try_parse_from([
        "callscope",
        "pipeline",
        "--workers",
        "3",
        "--worker-id",
        "w",
        "--flush-rows",
        "0",
        "--window-resolutions",
        "1m,5s,1m",
        "--alert-eval-interval",
        "1ms",
        "--alert-replay",
        "5m",
    ])
    .expect("parses");
    let Command::Pipeline(config) = cli.command else { panic!("not the pipeline command") };
    let args = &config.workers;

    let workers = args.ingest.worker_configs(&connection, &args.windows).expect("worker configs");
    let ids: Vec<&str> = workers.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["w-0", "w-1", "w-2"]);
    assert_eq!(workers[0].flush_rows, 1, "at least one row per batch");
    let aggregation = workers[0].aggregation.as_ref().expect("aggregation on");
    assert_eq!(aggregation.resolutions_ms, [5_000, 60_000]);

    let alerting = args.alerts.config(&connection, &args.windows, "test").expect("alerting on");
    assert_eq!(alerting.replay, Duration::from_secs(300));
    assert_eq!(alerting.eval_interval, Duration::from_millis(10), "evaluation interval at least 10 ms");
    assert_eq!(alerting.engine.resolution_ms, 5_000, "rules read the shortest windows when finer than 10 s");
}

#[test]
fn key_values_and_datasets_parse() {
    assert_eq!(values::parse_key_value(" a = b=c "), Ok(("a".to_string(), "b=c".to_string())));
    assert!(values::parse_key_value("ab").is_err());
    let Command::Produce(produce) =
        Cli::try_parse_from(["callscope", "produce", "--dataset", "spans"]).expect("parses").command
    else {
        panic!("not the produce command");
    };
    assert_eq!(produce.dataset, callscope_schemas::Dataset::Spans);
    assert!(Cli::try_parse_from(["callscope", "produce", "--dataset", "logs"]).is_err());
}

#[test]
fn tiers_default_under_the_data_dir_and_may_not_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let Command::Sql(sql) =
        Cli::try_parse_from(["callscope", "sql", "--data-dir", data, "SELECT 1"]).expect("parses").command
    else {
        panic!("not sql");
    };
    let tiers = sql.storage.tiers().expect("tiers");
    for (name, tier) in tiers.iter() {
        assert!(tier.dir_url("").ends_with(&format!("/{name}/")), "{name}: {}", tier.dir_url(""));
    }
    let nested = format!("file://{}/hot/warm", dir.path().display());
    let Command::Sql(sql) =
        Cli::try_parse_from(["callscope", "sql", "--data-dir", data, "--warm-url", &nested, "SELECT 1"])
            .expect("parses")
            .command
    else {
        panic!("not sql");
    };
    let err = sql.storage.tiers().expect_err("overlapping tiers").to_string();
    assert!(err.contains("hot tier") && err.contains("warm tier") && err.contains("overlap"), "{err}");
}

#[test]
fn tier_options_apply_to_their_tier_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    // A fault rule on the cold tier only: its reads fail, the others' do not.
    let args = ["callscope", "sql", "--data-dir", data, "--tier-option", "cold:fault_spec=list:*:error", "SELECT 1"];
    let Command::Sql(sql) = Cli::try_parse_from(args).expect("parses").command else { panic!("not sql") };
    let tiers = sql.storage.tiers().expect("tiers");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        assert!(tiers.hot.list("x/").await.is_ok());
        assert!(tiers.cold.list("x/").await.is_err(), "the cold tier got its option");
    });
    let bad = Cli::try_parse_from(["callscope", "sql", "--tier-option", "lukewarm:a=b", "SELECT 1"]);
    assert!(bad.expect_err("unknown tier").to_string().contains("lukewarm"));
}
