//! Command-line behaviour that needs no broker: configuration precedence, `sql`, and the
//! query API's price file.

use std::process::Command;

use crate::support::{BIN, Node, http};

fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).envs(envs.iter().copied()).output().expect("run callscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("callscope.toml");
    std::fs::write(
        &config,
        format!("data-dir = {:?}\nformat = \"csv\"\nunknown-key = 1\n", data.to_str().expect("path")),
    )
    .expect("write config");
    let config = config.to_str().expect("path");

    // The file's `format = "csv"` applies; its data directory is created and queried.
    let (ok, stdout, stderr) = run(&["--config", config, "sql", "SELECT COUNT(*) AS n FROM metrics"], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "n\n0");
    for tier in ["hot", "warm", "cold", "archive"] {
        assert!(data.join(tier).is_dir(), "data-dir from the config file holds the {tier} tier");
    }

    // The environment beats the file, a flag beats both.
    let (ok, stdout, _) = run(&["--config", config, "sql", "SELECT 1 AS one"], &[("CALLSCOPE_FORMAT", "json")]);
    assert!(ok);
    assert_eq!(stdout.trim(), r#"{"one":1}"#);
    let (ok, stdout, _) = run(&["--config", config, "sql", "--format", "json", "SELECT 1 AS one"], &[]);
    assert!(ok);
    assert_eq!(stdout.trim(), r#"{"one":1}"#);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, stderr) = run(&["sql", "--data-dir", dir.path().to_str().expect("path"), "DROP TABLE metrics"], &[]);
    assert!(!ok);
    assert!(stderr.contains("DDL not supported"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = run(&["--config", "/nonexistent.toml", "sql", "SELECT 1"], &[]);
    assert!(!ok);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
    let (ok, _, stderr) = run(&["standalone", "--flush-interval", "soon"], &[]);
    assert!(!ok);
    assert!(stderr.contains("--flush-interval"), "{stderr}");
}

#[test]
fn the_cost_report_takes_its_prices_from_a_file_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"usd_per_gb_month": {"warm": 0.02}, "usd_per_1000_write_requests": 0.0054}"#)
        .expect("write prices");
    let node = Node::query_api(dir.path()).args(["--prices", prices.to_str().expect("path")]).spawn();
    let costs = http().call("GET", &format!("{}/monitoring/storage/costs", node.http), None).json();
    assert_eq!(costs["prices_usd_per_gb_month"]["warm"], 0.02, "{costs}");
    assert_eq!(costs["prices_usd_per_gb_month"]["hot"], 0.023, "a tier the file leaves out keeps its default");
    assert_eq!(costs["prices_usd_per_1000_requests"]["write"], 0.0054, "{costs}");
    assert_eq!(costs["prices_usd_per_1000_requests"]["read"], 0.0004, "{costs}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"usd_per_gb_month": {"lukewarm": 1}}"#).expect("write prices");
    let data = dir.path().join("other");
    let (ok, _, stderr) = run(
        &["query-api", "--data-dir", data.to_str().expect("path"), "--http-addr", "127.0.0.1:0"],
        &[("CALLSCOPE_PRICES", bad.to_str().expect("path"))],
    );
    assert!(!ok, "a bad price file stops the start");
    assert!(stderr.contains("lukewarm") && stderr.contains("bad.json"), "{stderr}");
}

#[test]
fn datafusion_settings_come_from_the_environment_and_a_bad_one_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let query = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    let (ok, stdout, stderr) =
        run(&["sql", "--data-dir", data, "--format", "csv", query], &[("DATAFUSION_EXECUTION_BATCH_SIZE", "4096")]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "value\n4096");
    let (ok, _, stderr) = run(
        &["sql", "--data-dir", data, "SELECT 1"],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "a lot"), ("RUST_BACKTRACE", "0")],
    );
    assert!(!ok);
    assert!(stderr.contains("datafusion.execution.batch_size"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
