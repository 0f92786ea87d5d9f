//! Where policies, legal holds and job records live: JSON objects in the catalog.

use crate::Result;
use crate::catalog::CatalogDir;
use crate::json_objects::JsonObjects;
use crate::tier::Tier;

use super::holds::LegalHold;
use super::jobs::JobRecord;
use super::policy::Policy;

/// Lifecycle policies: the stored ones, and the built-in `default` unless a stored policy
/// of that id replaces it (store it with `"enabled": false` to turn it off).
#[derive(Debug, Clone)]
pub struct PolicyStore {
    objects: JsonObjects,
}

impl PolicyStore {
    pub fn new(hot: Tier) -> PolicyStore {
        PolicyStore { objects: JsonObjects::new(hot, CatalogDir::Policies) }
    }

    /// The policies in force: the stored ones and the built-in default (unless replaced).
    pub async fn list(&self) -> Result<Vec<Policy>> {
        let mut stored: Vec<Policy> = self.objects.list().await?;
        if !stored.iter().any(|p| p.id == Policy::default_policy().id) {
            stored.push(Policy::default_policy());
        }
        stored.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(stored)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Policy>> {
        Ok(self.list().await?.into_iter().find(|p| p.id == id))
    }

    /// Stores a policy after validating it.
    pub async fn put(&self, policy: &Policy) -> Result<()> {
        policy.validate()?;
        self.objects.put(&policy.id, policy).await
    }

    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.objects.delete(id).await
    }
}

/// Legal holds.
#[derive(Debug, Clone)]
pub struct HoldStore {
    objects: JsonObjects,
}

impl HoldStore {
    pub fn new(hot: Tier) -> HoldStore {
        HoldStore { objects: JsonObjects::new(hot, CatalogDir::LegalHolds) }
    }

    pub async fn list(&self) -> Result<Vec<LegalHold>> {
        let mut holds: Vec<LegalHold> = self.objects.list().await?;
        holds.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
        Ok(holds)
    }

    pub async fn get(&self, id: &str) -> Result<Option<LegalHold>> {
        self.objects.get(id).await
    }

    pub async fn put(&self, hold: &LegalHold) -> Result<()> {
        self.objects.put(&hold.id, hold).await
    }

    /// Releases a hold (it stays on record); returns it, or `None` if there is no such hold.
    pub async fn release(&self, id: &str, now_ms: i64) -> Result<Option<LegalHold>> {
        let Some(mut hold) = self.get(id).await? else { return Ok(None) };
        if hold.released_at_ms.is_none() {
            hold.released_at_ms = Some(now_ms);
            self.put(&hold).await?;
        }
        Ok(Some(hold))
    }
}

/// Records of lifecycle jobs.
#[derive(Debug, Clone)]
pub struct JobStore {
    objects: JsonObjects,
}

impl JobStore {
    pub fn new(hot: Tier) -> JobStore {
        JobStore { objects: JsonObjects::new(hot, CatalogDir::LifecycleJobs) }
    }

    /// Every job, newest first.
    pub async fn list(&self) -> Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self.objects.list().await?;
        jobs.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        self.objects.get(id).await
    }

    pub async fn put(&self, job: &JobRecord) -> Result<()> {
        self.objects.put(&job.id, job).await
    }
}
