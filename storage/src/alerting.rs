//! Alerting records that the evaluator and the API share through the hot tier: silences,
//! and where the evaluator keeps its state, status and delivery failures.

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::json_objects::JsonObjects;
use crate::tier::Tier;

/// The leader's notification log and publishing progress.
pub const STATE_PATH: &str = "_catalog/alerting/state.json";
/// Rules, their state and the active alerts, as the leader last saw them.
pub const STATUS_PATH: &str = "_catalog/alerting/status.json";
/// Failed deliveries, one object each, under `date=YYYY-MM-DD/`.
pub const FAILURES_DIR: &str = "_catalog/alerting/failures";
const SILENCES_DIR: &str = "_catalog/alerting/silences";

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

impl Silence {
    /// `pending`, `active` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
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
        SilenceStore { objects: JsonObjects::new(tier, SILENCES_DIR) }
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
        assert_eq!(s.state(500), "pending");
        assert_eq!(s.state(5_000), "active");
        assert!(store.expire("s1", 5_000).await.expect("expire"));
        assert_eq!(store.get("s1").await.expect("get").expect("kept").state(5_000), "expired");
        assert!(!store.expire("nope", 5_000).await.expect("expire"));
    }
}
