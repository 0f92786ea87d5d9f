//! Alerting records that the evaluator and the API share through the hot tier: silences,
//! and where the evaluator keeps its state, status and delivery failures.

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::catalog::CatalogDir;
use crate::json_objects::JsonObjects;
use crate::tier::Tier;

/// An acknowledgement of one firing episode of an alert (stops its escalation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub fingerprint: String,
    /// The `starts_at_ms` of the episode acknowledged; a later episode needs a new one.
    pub starts_at_ms: i64,
    pub by: String,
    #[serde(default)]
    pub comment: String,
    pub at_ms: i64,
}

/// Acknowledgements, one object per alert fingerprint.
#[derive(Debug, Clone)]
pub struct AckStore {
    objects: JsonObjects,
}

impl AckStore {
    pub fn new(tier: Tier) -> AckStore {
        AckStore { objects: JsonObjects::new(tier, CatalogDir::Acks) }
    }

    pub async fn list(&self) -> Result<Vec<Ack>> {
        self.objects.list().await
    }

    pub async fn put(&self, ack: &Ack) -> Result<()> {
        self.objects.put(&ack.fingerprint, ack).await
    }

    pub async fn delete(&self, fingerprint: &str) -> Result<bool> {
        self.objects.delete(fingerprint).await
    }
}

/// One matcher of a silence, as Alertmanager's API v2 writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence: alerts matching every matcher are not notified between start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub updated_at_ms: i64,
}

/// A silence's state at some time (Alertmanager's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms < self.starts_at_ms {
            SilenceState::Pending
        } else if now_ms < self.ends_at_ms {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }
}

/// Silences, one object each.
#[derive(Debug, Clone)]
pub struct SilenceStore {
    objects: JsonObjects,
}

impl SilenceStore {
    pub fn new(tier: Tier) -> SilenceStore {
        SilenceStore { objects: JsonObjects::new(tier, CatalogDir::Silences) }
    }

    /// All silences, newest first.
    pub async fn list(&self) -> Result<Vec<Silence>> {
        let mut all: Vec<Silence> = self.objects.list().await?;
        all.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Silence>> {
        self.objects.get(id).await
    }

    pub async fn put(&self, silence: &Silence) -> Result<()> {
        self.objects.put(&silence.id, silence).await
    }

    /// Expires a silence now (kept for history, as Alertmanager does); false if unknown.
    pub async fn expire(&self, id: &str, now_ms: i64) -> Result<bool> {
        let Some(mut s) = self.get(id).await? else { return Ok(false) };
        if s.ends_at_ms > now_ms {
            s.ends_at_ms = now_ms.max(s.starts_at_ms);
            s.updated_at_ms = now_ms;
            self.put(&s).await?;
        }
        Ok(true)
    }
}

/// Smart rules, one object each (validated by the API before they are stored).
#[derive(Debug, Clone)]
pub struct SmartRuleStore {
    objects: JsonObjects,
}

impl SmartRuleStore {
    pub fn new(tier: Tier) -> SmartRuleStore {
        SmartRuleStore { objects: JsonObjects::new(tier, CatalogDir::SmartRules) }
    }

    /// All rules, by name then id.
    pub async fn list(&self) -> Result<Vec<callscope_schemas::smart_rules::SmartRule>> {
        let mut all: Vec<callscope_schemas::smart_rules::SmartRule> = self.objects.list().await?;
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    pub async fn get(&self, id: &str) -> Result<Option<callscope_schemas::smart_rules::SmartRule>> {
        self.objects.get(id).await
    }

    pub async fn put(&self, rule: &callscope_schemas::smart_rules::SmartRule) -> Result<()> {
        self.objects.put(&rule.id, rule).await
    }

    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.objects.delete(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TierConfig;

    #[tokio::test]
    async fn silences_persist_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SilenceStore::new(Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier"));
        let s = Silence {
            id: "s1".into(),
            matchers: vec![SilenceMatcher {
                name: "service".into(),
                value: "gw".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at_ms: 1_000,
            ends_at_ms: 10_000,
            created_by: "oncall".into(),
            comment: "maintenance".into(),
            updated_at_ms: 1_000,
        };
        store.put(&s).await.expect("put");
        assert_eq!(store.list().await.expect("list"), vec![s.clone()]);
        assert_eq!(s.state(500), SilenceState::Pending);
        assert_eq!(s.state(5_000), SilenceState::Active);
        assert!(store.expire("s1", 5_000).await.expect("expire"));
        assert_eq!(store.get("s1").await.expect("get").expect("kept").state(5_000), SilenceState::Expired);
        assert!(!store.expire("nope", 5_000).await.expect("expire"));
    }
}
