//! Alert evaluation and notification.

use std::path::PathBuf;
use std::time::Duration;

use callscope_alerting::AlertingConfig;
use callscope_alerting::engine::EngineConfig;
use callscope_runtime::KafkaConnection;
use clap::Args;

use super::windows::WindowArgs;

#[derive(Debug, Clone, Args)]
pub struct AlertArgs {
    /// Prometheus rule files to evaluate (comma separated); edits are picked up within 2 s.
    #[arg(long, env = "CALLSCOPE_ALERT_RULES", value_delimiter = ',')]
    pub alert_rules: Vec<PathBuf>,
    /// Notification routes and receivers (Alertmanager-shaped YAML; `${ENV}` expanded).
    #[arg(long, env = "CALLSCOPE_NOTIFY_CONFIG")]
    pub notify_config: Option<PathBuf>,
    /// Do not load the built-in rules for the phone platform.
    #[arg(long, env = "CALLSCOPE_NO_DEFAULT_RULES")]
    pub no_default_rules: bool,
    /// Evaluate rules on the open windows this often (and after every batch of messages).
    #[arg(long, env = "CALLSCOPE_ALERT_EVAL_INTERVAL", default_value_t = AlertingConfig::DEFAULT_EVAL_INTERVAL.into())]
    pub alert_eval_interval: humantime::Duration,
    /// History the evaluator reads back on start to rebuild alert state.
    #[arg(long, env = "CALLSCOPE_ALERT_REPLAY", default_value_t = AlertingConfig::DEFAULT_REPLAY.into())]
    pub alert_replay: humantime::Duration,
    /// After this long without metrics, the wall clock advances alert time (absence rules).
    #[arg(long, env = "CALLSCOPE_ALERT_IDLE_AFTER", default_value_t = EngineConfig::DEFAULT_IDLE_AFTER.into())]
    pub alert_idle_after: humantime::Duration,
    /// Run no alert evaluator in this process.
    #[arg(long, env = "CALLSCOPE_NO_ALERTING")]
    pub no_alerting: bool,
}

impl AlertArgs {
    /// The evaluator's settings, `None` with `--no-alerting`. Rules read 10 s windows (or
    /// the shortest resolution of `windows`, if finer); `instance` names this evaluator in the leader lease.
    pub fn config(&self, connection: &KafkaConnection, windows: &WindowArgs, instance: &str) -> Option<AlertingConfig> {
        if self.no_alerting {
            return None;
        }
        let mut c = AlertingConfig::new(connection.clone(), instance);
        c.rule_files = self.alert_rules.clone();
        c.notify_file = self.notify_config.clone();
        c.default_rules = !self.no_default_rules;
        c.eval_interval = (*self.alert_eval_interval).max(Duration::from_millis(10));
        c.replay = *self.alert_replay;
        c.engine.idle_after_ms = self.alert_idle_after.as_millis() as i64;
        // The evaluator keeps windows of its own in memory (10 s, or finer when the workers
        // write finer roll-ups): the stored resolutions do not slow alerts down.
        if let Some(shortest) = windows.resolutions_ms().first() {
            c.engine.resolution_ms = c.engine.resolution_ms.min(*shortest);
        }
        Some(c)
    }
}
