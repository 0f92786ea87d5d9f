//! Configuration of the alert evaluator: where the rules and the notification config come
//! from, the default phone-platform rule pack, and the timing of evaluation and replay.

use std::path::PathBuf;
use std::time::Duration;

use callscope_runtime::KafkaConnection;
use callscope_schemas::Dataset;

use crate::engine::EngineConfig;
use crate::notify::config::{NotifyConfig, Route};
use crate::rules::{AlertRule, load_rule_file};
use crate::{AlertingError, Result};

/// The phone platform's default rules, enabled unless turned off.
pub const DEFAULT_RULES: &str = include_str!("../rules/phone-platform.yaml");
/// The default smart rules, the built-in ones of
/// [`callscope_schemas::smart_rules::builtin_smart_rules`] (a stored smart rule with the same
/// id replaces one).
pub fn default_smart_rules() -> Result<Vec<callscope_schemas::smart_rules::SmartRule>> {
    callscope_schemas::smart_rules::builtin_smart_rules()
        .map_err(|e| AlertingError::Config(format!("default smart rules: {e}")))
}

#[derive(Debug, Clone)]
pub struct AlertingConfig {
    pub kafka: KafkaConnection,
    pub metric_topics: Vec<String>,
    pub alerts_topic: String,
    pub rule_files: Vec<PathBuf>,
    pub default_rules: bool,
    pub notify_file: Option<PathBuf>,
    pub engine: EngineConfig,
    pub eval_interval: Duration,
    /// History read back on start; at least the longest rule range plus its `for`.
    pub replay: Duration,
    pub lease_topic: String,
    pub lease_group: String,
    pub instance_id: String,
}

impl AlertingConfig {
    // The defaults, stated once (the CLI's flags show and use these).
    /// Evaluate on the open windows this often (and after every batch of messages).
    pub const DEFAULT_EVAL_INTERVAL: Duration = Duration::from_millis(250);
    /// History read back on start: the longest default rule range plus its `for`, with margin.
    pub const DEFAULT_REPLAY: Duration = Duration::from_secs(35 * 60);

    pub fn new(kafka: KafkaConnection, instance_id: impl Into<String>) -> AlertingConfig {
        AlertingConfig {
            kafka,
            metric_topics: vec![Dataset::Metrics.default_topic().to_string()],
            alerts_topic: Dataset::Alerts.default_topic().to_string(),
            rule_files: Vec::new(),
            default_rules: true,
            notify_file: None,
            engine: EngineConfig::default(),
            eval_interval: Self::DEFAULT_EVAL_INTERVAL,
            replay: Self::DEFAULT_REPLAY,
            lease_topic: "callscope.alerting-lease".into(),
            lease_group: "callscope-alerting".into(),
            instance_id: instance_id.into(),
        }
    }
}

/// Loads the default pack and the rule files; the first problem names its file.
pub fn load_rules(config: &AlertingConfig) -> Result<Vec<AlertRule>> {
    let mut rules = Vec::new();
    if config.default_rules {
        rules.extend(load_rule_file(DEFAULT_RULES).map_err(|e| AlertingError::Config(format!("default rules: {e}")))?);
        for r in default_smart_rules()? {
            r.validate().map_err(|e| {
                AlertingError::Config(format!("default smart rule {}: {}: {}", r.id, e.field, e.message))
            })?;
        }
    }
    for path in &config.rule_files {
        let text =
            std::fs::read_to_string(path).map_err(|e| AlertingError::Config(format!("{}: {e}", path.display())))?;
        rules.extend(load_rule_file(&text).map_err(|e| AlertingError::Config(format!("{}: {e}", path.display())))?);
    }
    Ok(rules)
}

pub(crate) fn load_notify(config: &AlertingConfig) -> Result<Option<(NotifyConfig, Route)>> {
    let Some(path) = &config.notify_file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| AlertingError::Config(format!("{}: {e}", path.display())))?;
    NotifyConfig::parse(&text).map(Some).map_err(|e| AlertingError::Config(format!("{}: {e}", path.display())))
}

/// Fingerprint of the files' contents, to notice edits.
pub(crate) fn files_version(config: &AlertingConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for path in config.rule_files.iter().chain(config.notify_file.iter()) {
        std::fs::read(path).ok().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pack_loads() {
        let config = AlertingConfig::new(KafkaConnection::new("127.0.0.1:1"), "test");
        let rules = load_rules(&config).expect("default rules load");
        assert!(rules.len() >= 9, "{}", rules.len());
        let smart = default_smart_rules().expect("default smart rules parse");
        let mut engine = crate::engine::AlertEngine::new(Default::default(), rules);
        assert!(engine.set_smart_rules(smart).is_empty(), "default smart rules compile");
    }
}
