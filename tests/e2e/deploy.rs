//! The deployment files, checked as far as this machine allows: the compose file against
//! the Compose specification (check-jsonschema's vendored schema), the Kubernetes manifests
//! against the Kubernetes schemas (kubernetes-validate), the Prometheus and Alertmanager
//! configurations by their own tools, every file the compose file mounts present, and the
//! image built (from the binary under test) and run with `--help` when a container runtime
//! answers; without one the test says so plainly and checks the rest.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).current_dir(root()).output().expect("run a checker");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_compose_file_and_the_kubernetes_manifests_validate() {
    let python = python_with("import check_jsonschema, kubernetes_validate");
    let python = python.to_str().expect("path");

    let (ok, out) = run(
        python,
        &["-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", "deploy/docker-compose.yml"],
    );
    assert!(ok, "deploy/docker-compose.yml is not a valid Compose file:\n{out}");
    // Every file it mounts is in the repository.
    let compose = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).expect("compose file");
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert!(mounts.len() >= 6, "{mounts:?}");
    for m in mounts {
        assert!(root().join("deploy").join(m).exists(), "deploy/docker-compose.yml mounts ./{m}, which does not exist");
    }

    let manifests: Vec<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let mut args = vec!["-m", "kubernetes_validate", "--kubernetes-version", "1.33.0", "--strict"];
    args.extend(manifests.iter().map(String::as_str));
    let (ok, out) = run(python, &args);
    assert!(ok, "the Kubernetes manifests do not validate:\n{out}");
    let all: String = manifests.iter().map(|m| std::fs::read_to_string(m).unwrap_or_default()).collect();
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret"] {
        assert!(all.contains(&format!("kind: {kind}\n")), "no {kind} among the manifests");
    }

    let (ok, out) = run(tool("promtool"), &["check", "config", "deploy/compose/prometheus.yml"]);
    assert!(ok, "{out}");
    let (ok, out) =
        run(debian_tool("amtool", "prometheus-alertmanager"), &["check-config", "deploy/compose/alertmanager.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn the_image_runs_the_binary_when_a_container_runtime_is_there() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for needed in
        ["AS build", "FROM debian:bookworm-slim AS runtime", "USER 10001", "HEALTHCHECK", "ENTRYPOINT [\"callscope\"]"]
    {
        assert!(dockerfile.contains(needed), "the Dockerfile lacks {needed:?}");
    }
    let runtime = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    let Some(version) =
        runtime.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    else {
        eprintln!(
            "NOTE: no container runtime answers here (`docker info` failed): the image was not built or run; \
             the Dockerfile's stages were checked as text"
        );
        return;
    };
    eprintln!("container runtime: Docker {version}");
    let context = tempfile::tempdir().expect("context");
    std::fs::copy(BIN, context.path().join("callscope")).expect("copy the binary");
    let tag = format!("callscope-test:{}", std::process::id());
    let dockerfile = root().join("Dockerfile");
    let built = Command::new("docker")
        .args(["build", "--target", "prebuilt", "-t", &tag, "-f"])
        .arg(&dockerfile)
        .arg(context.path())
        .status()
        .expect("docker build");
    assert!(built.success(), "docker build --target prebuilt failed");
    let out = Command::new("docker").args(["run", "--rm", &tag, "--help"]).output().expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).status();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("standalone") && text.contains("query-api"), "{text}");
}
