//! Command-line behaviour that needs no broker: configuration precedence and `sql`.

use std::process::Command;

use crate::support::BIN;

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
