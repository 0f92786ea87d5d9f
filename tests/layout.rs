//! The workspace's dependency rule, checked against `cargo metadata` so that it cannot rot:
//!
//! binary → {pipeline, alerting, query-api} → {runtime, storage} → schemas
//!
//! `pipeline`, `alerting` and `query-api` never import each other (what two of them share
//! moves down a layer), and ingestion carries no notification or PromQL dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Workspace crates each crate may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("callscope-schemas", &[]),
    ("callscope-storage", &["callscope-schemas"]),
    ("callscope-runtime", &["callscope-schemas"]),
    ("callscope-pipeline", &["callscope-schemas", "callscope-storage", "callscope-runtime"]),
    ("callscope-alerting", &["callscope-schemas", "callscope-storage", "callscope-runtime"]),
    ("callscope-query-api", &["callscope-schemas", "callscope-storage", "callscope-runtime"]),
];

/// Dependencies of alerting (notification channels, rule files) that ingestion must not
/// carry, directly or through another crate. (`promql-parser` is no longer among them: the
/// PromQL subset and its evaluator live in `callscope-schemas`, one implementation shared by
/// the alert rules and the query API's Prometheus API.)
const NOT_IN_PIPELINE: &[&str] = &["lettre", "serde_norway", "hmac"];

/// The platform this test runs on (`rustc -vV`): the dependency graph is read for it only,
/// so that packages of other platforms, which the build never downloaded, are not needed.
fn host() -> String {
    let output = Command::new("rustc").arg("-vV").output().expect("rustc -vV runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .expect("rustc -vV names the host")
}

fn metadata() -> serde_json::Value {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host(), "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn crates_depend_one_way() {
    let meta = metadata();
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    for package in meta["packages"].as_array().expect("packages").iter().filter(|p| p["source"].is_null()) {
        let name = package["name"].as_str().expect("name");
        if name == "callscope" {
            continue;
        }
        let Some(may) = allowed.get(name) else { panic!("{name} is a new workspace crate: add it to ALLOWED") };
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            if dep["kind"].is_null() && members.contains(dep_name) {
                assert!(may.contains(&dep_name), "{name} must not depend on {dep_name} (see README, Layout)");
            }
        }
    }
}

#[test]
fn ingestion_carries_no_alerting_dependencies() {
    let meta = metadata();
    let nodes: BTreeMap<String, Vec<String>> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null())))
                .map(|d| d["pkg"].as_str().expect("pkg").to_string())
                .collect();
            (n["id"].as_str().expect("id").to_string(), deps)
        })
        .collect();
    let name_of = |id: &str| {
        meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["name"].as_str())
            .map(str::to_string)
    };
    let root =
        nodes.keys().find(|id| name_of(id).as_deref() == Some("callscope-pipeline")).expect("pipeline crate").clone();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if seen.insert(id.clone()) {
            stack.extend(nodes.get(&id).into_iter().flatten().cloned());
        }
    }
    let names: BTreeSet<String> = seen.iter().filter_map(|id| name_of(id)).collect();
    for forbidden in NOT_IN_PIPELINE {
        assert!(
            !names.contains(*forbidden),
            "callscope-pipeline pulls in {forbidden}: alerting code crept into ingestion"
        );
    }
    assert!(!names.contains("callscope-alerting") && !names.contains("callscope-query-api"));
}
