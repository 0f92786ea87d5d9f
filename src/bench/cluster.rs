//! `callscope bench cluster`: preloads `callscope.metrics` on a broker of its own, then
//! runs, in each round, one `pipeline` process and `--pipelines` processes in one consumer
//! group (alternating which goes first), each group fresh and storing into a fresh shared
//! directory. Each process is this binary, started as an operator would start it, with its
//! metrics endpoint; the bench polls every process's stored-events counter.
//!
//! The rate is the steady one: events stored from the moment every process has stored
//! something (and at least 10 % of the total is stored) to the moment 90 % is, over the
//! time between the two, so that process start-up, the group's first rebalances and the
//! last partial batches count in neither (use enough `--events` for the group to spread
//! the partitions before 90 %). Per process it also prints the CPU time (user +
//! system) spent, as events per CPU-second, and the peak resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_schemas::Dataset;

use super::common::{RunTable, cores, median, memory_of, scratch_dir};
use super::pipeline::preload_topic;
use crate::cli::BenchClusterConfig;

/// Longest one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn run(config: BenchClusterConfig) -> anyhow::Result<()> {
    let stream = &config.stream;
    anyhow::ensure!(config.pipelines >= 2, "--pipelines must be at least 2 (one process is the baseline)");
    anyhow::ensure!(
        stream.brokers.is_none(),
        "bench cluster starts a broker of its own (its topic callscope.metrics must hold the preloaded events only)"
    );
    let preloaded = preload_topic(stream, "cluster", Some(Dataset::Metrics.default_topic())).await?;
    let brokers = preloaded.connection.brokers.clone();
    anyhow::ensure!(config.workers >= 1, "--workers must be at least 1");
    println!(
        "{} pipeline processes against 1, {} worker(s) each, on {} cores; steady rates (all processes storing, 10 % to 90 % of the events)",
        config.pipelines,
        config.workers,
        cores()
    );
    let mut table = RunTable::new(16, "1 process ev/s", &format!("{} procs ev/s", config.pipelines), "ratio");
    let (mut cpu_rates, mut peaks) = (Vec::new(), Vec::new());
    for run in 1..=stream.runs {
        let measure = |processes: usize| ClusterRun::measure(&brokers, stream, processes, config.workers);
        let (one, many) = if run % 2 == 1 {
            let one = measure(1).await.context("one process")?;
            (one, measure(config.pipelines).await.context("the cluster")?)
        } else {
            let many = measure(config.pipelines).await.context("the cluster")?;
            (measure(1).await.context("one process")?, many)
        };
        for (label, r) in [("1 process", &one), ("cluster", &many)] {
            println!(
                "     {label}: {} events per CPU-second over {:.1} CPU-s; peak memory per process {}",
                r.events_per_cpu_second(stream.events).round(),
                r.cpu_seconds.iter().sum::<f64>(),
                r.peak_rss.iter().map(|b| format!("{:.0} MB", *b as f64 / 1e6)).collect::<Vec<_>>().join(", ")
            );
        }
        cpu_rates.push(one.events_per_cpu_second(stream.events));
        peaks.extend(one.peak_rss.iter().map(|b| *b as f64));
        table.row(run, one.rate, many.rate);
    }
    table.medians();
    println!(
        "one process: median {:.0} events per CPU-second, median peak memory {:.0} MB",
        median(&mut cpu_rates),
        median(&mut peaks) / 1e6
    );
    preloaded.stop();
    Ok(())
}

/// What one run of `processes` pipelines measured.
struct ClusterRun {
    /// Steady events/s of all processes together.
    rate: f64,
    cpu_seconds: Vec<f64>,
    peak_rss: Vec<u64>,
}

impl ClusterRun {
    fn events_per_cpu_second(&self, events: usize) -> f64 {
        events as f64 / self.cpu_seconds.iter().sum::<f64>().max(1e-9)
    }

    async fn measure(
        brokers: &str,
        stream: &crate::cli::BenchIngestConfig,
        processes: usize,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let dir = scratch_dir("bench-cluster")?;
        let group = format!("bench-cluster-{}", uuid::Uuid::new_v4().simple());
        let mut children = Vec::new();
        for i in 0..processes {
            children.push(PipelineProcess::start(&dir, brokers, &group, i, workers, stream)?);
        }
        let result = Self::watch(&mut children, stream.events).await;
        for child in &mut children {
            child.stop();
        }
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Polls every process's stored counter until all events are stored. The rate is taken
    /// from the moment every process has stored something (and 10 % of the events are
    /// stored) to the moment 90 % are.
    async fn watch(children: &mut [PipelineProcess], events: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + RUN_TIMEOUT;
        let (low, high) = (events / 10, events - events / 10);
        let mut window_start: Option<(Instant, u64)> = None;
        let mut active = vec![false; children.len()];
        loop {
            let mut stored = 0u64;
            for (i, child) in children.iter_mut().enumerate() {
                child.check_running()?;
                let n = child.stored(&client).await;
                active[i] |= n > 0;
                stored += n;
            }
            let now = Instant::now();
            if window_start.is_none() && stored as usize >= low && active.iter().all(|a| *a) {
                window_start = Some((now, stored));
            }
            if stored as usize >= high {
                let Some((t0, s0)) = window_start else {
                    let idle = active.iter().filter(|a| !**a).count();
                    anyhow::bail!(
                        "{idle} of {} processes had stored nothing when 90 % of the events were stored: \
                         more workers than partitions, or the group had not spread the partitions yet (use more --events)",
                        children.len()
                    );
                };
                let rate = (stored - s0) as f64 / now.duration_since(t0).as_secs_f64().max(1e-3);
                // The rest is stored before the processes stop, so that their CPU time
                // covers every event.
                while (children_stored(children, &client).await as usize) < events {
                    anyhow::ensure!(Instant::now() < deadline, "the pipelines never stored every event");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let cpu_seconds = children.iter().map(PipelineProcess::cpu_seconds).collect();
                let peak_rss = children.iter().map(PipelineProcess::peak_rss).collect();
                return Ok(ClusterRun { rate, cpu_seconds, peak_rss });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipelines stored {stored} of {events} events in {RUN_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn children_stored(children: &[PipelineProcess], client: &reqwest::Client) -> u64 {
    let mut stored = 0;
    for child in children {
        stored += child.stored(client).await;
    }
    stored
}

/// One `callscope pipeline` process of the bench.
struct PipelineProcess {
    child: Child,
    metrics_url: String,
    log: PathBuf,
}

impl PipelineProcess {
    fn start(
        dir: &Path,
        brokers: &str,
        group: &str,
        index: usize,
        workers: usize,
        stream: &crate::cli::BenchIngestConfig,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join(format!("pipeline-{index}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("pipeline")
            .args(["--brokers", brokers, "--group-id", group])
            .args(["--worker-id", &format!("bench-{index}"), "--workers", &workers.to_string()])
            .args(["--data-dir".as_ref(), dir.join("data").as_os_str()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--flush-rows", &stream.flush_rows.to_string(), "--flush-interval", "200ms"])
            .args(["--partitions", &stream.partitions.to_string()])
            .args(["--no-alerting", "--lifecycle-interval", "0s"])
            .stdout(Stdio::null())
            .stderr(out.try_clone()?)
            .spawn()
            .context("start a pipeline process")?;
        Ok(PipelineProcess { child, metrics_url: format!("http://127.0.0.1:{port}/metrics"), log })
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::bail!(
                "a pipeline process exited ({status}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Events this process has stored (0 until its endpoint answers).
    async fn stored(&self, client: &reqwest::Client) -> u64 {
        let Ok(reply) = client.get(&self.metrics_url).send().await else { return 0 };
        let Ok(text) = reply.text().await else { return 0 };
        counter_sum(&text, "callscope_pipeline_events_stored_total") as u64
    }

    /// User and system CPU seconds so far (Linux; 0 elsewhere).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 12th and 13th of them, in clock ticks (100 per second).
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident memory in bytes (Linux; 0 elsewhere).
    fn peak_rss(&self) -> u64 {
        memory_of(&self.child.id().to_string()).1
    }

    /// SIGTERM (the pipeline's clean stop), then waits; kills after 30 s.
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a counter's series in a Prometheus text exposition.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_counter_is_summed_over_its_series_and_nothing_else() {
        let text =
            "# TYPE x_total counter\nx_total{topic=\"a\"} 3\nx_total{topic=\"b\"} 4\nx_total_other 9\nx_totals 1\n";
        assert_eq!(super::counter_sum(text, "x_total"), 7.0);
    }
}
