//! The cost model: what the data costs per month in each tier now, what it will cost once
//! the lifecycle policy has run for its whole horizon at today's ingest rate, and what
//! keeping everything hot would cost instead.
//!
//! Prices are per GB-month (GB = 10⁹ bytes) and configurable; the defaults are list prices
//! of common object-store classes (S3 Standard, Standard-IA, Glacier Instant Retrieval,
//! Glacier Deep Archive in us-east-1).
//!
//! Requests are priced too, and at small volumes they are most of the bill: every flush of
//! every partition writes a batch file, and each batch file comes with about seven
//! write-class requests (the file, its rename, the batch record, listings, checkpoints,
//! heartbeats and the alert state) and four read-class ones. Measured with `standalone
//! --demo` (2026-12-01, 85 s, 635 batches, 691 data files, every store call of the process
//! counted): 4 553 write-class and 2 924 read-class calls, 6.6 and 4.2 per data file. The
//! estimate scales that by the batch files of the last day; queries' own reads and the
//! lifecycle's few requests per table-hour are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lifecycle::policy::{Policy, PolicyStep};
use crate::tiers::TierName;
use crate::usage::{IngestLastDay, TierTableUsage};

/// Prices: per GB-month of each tier, and per 1 000 requests of the hot tier's class (where
/// the workers write); and the requests that come with each batch file. Read from a JSON
/// file with [`CostModel::from_json`]; what the file leaves out keeps its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostModel {
    pub usd_per_gb_month: BTreeMap<TierName, f64>,
    /// PUT, COPY, POST and LIST requests (S3 Standard: $0.005 per 1 000).
    pub usd_per_1000_write_requests: f64,
    /// GET, HEAD and the rest (S3 Standard: $0.0004 per 1 000).
    pub usd_per_1000_read_requests: f64,
    /// Write- and read-class requests per batch file, all of a process's store traffic
    /// included (see the module's documentation).
    pub write_requests_per_batch_file: f64,
    pub read_requests_per_batch_file: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            usd_per_gb_month: BTreeMap::from([
                (TierName::Hot, 0.023),
                (TierName::Warm, 0.0125),
                (TierName::Cold, 0.004),
                (TierName::Archive, 0.00099),
            ]),
            usd_per_1000_write_requests: 0.005,
            usd_per_1000_read_requests: 0.0004,
            write_requests_per_batch_file: 6.6,
            read_requests_per_batch_file: 4.2,
        }
    }
}

/// A price file that does not parse or holds a price that is not a finite, non-negative number.
#[derive(Debug, thiserror::Error)]
#[error("cost model: {0}")]
pub struct CostModelError(String);

impl CostModel {
    /// Prices from JSON, e.g. `{"usd_per_gb_month": {"hot": 0.026}, "usd_per_1000_write_requests":
    /// 0.0054}`: a tier or field left out keeps its default; unknown fields are refused.
    pub fn from_json(text: &str) -> Result<CostModel, CostModelError> {
        let mut model: CostModel = serde_json::from_str(text).map_err(|e| CostModelError(e.to_string()))?;
        for (tier, price) in CostModel::default().usd_per_gb_month {
            model.usd_per_gb_month.entry(tier).or_insert(price);
        }
        let prices = model.usd_per_gb_month.iter().map(|(t, p)| (format!("usd_per_gb_month.{t}"), *p)).chain([
            ("usd_per_1000_write_requests".to_string(), model.usd_per_1000_write_requests),
            ("usd_per_1000_read_requests".to_string(), model.usd_per_1000_read_requests),
            ("write_requests_per_batch_file".to_string(), model.write_requests_per_batch_file),
            ("read_requests_per_batch_file".to_string(), model.read_requests_per_batch_file),
        ]);
        for (field, value) in prices {
            if !value.is_finite() || value < 0.0 {
                return Err(CostModelError(format!("{field} must be a finite number ≥ 0, not {value}")));
            }
        }
        Ok(model)
    }
}

const GB: f64 = 1e9;
const DAY_MS: f64 = 86_400_000.0;
/// Days in the month of a monthly figure.
const MONTH_DAYS: f64 = 30.0;

/// Object-store requests per month at the last day's rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestEstimate {
    /// Batch files the workers wrote in the last day (one per partition, table-hour and flush).
    pub batch_files_per_day: u64,
    pub write_requests_per_month: f64,
    pub read_requests_per_month: f64,
    pub usd_per_month: f64,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostLine {
    pub tier: String,
    pub table: String,
    pub bytes: u64,
    pub usd_per_month: f64,
}

/// The answer of the cost model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub prices_usd_per_gb_month: BTreeMap<TierName, f64>,
    /// `write` and `read` request prices.
    pub prices_usd_per_1000_requests: BTreeMap<&'static str, f64>,
    /// What is stored now.
    pub current: Vec<CostLine>,
    pub current_usd_per_month: f64,
    /// The same rows kept as first written, in the hot tier.
    pub current_all_hot_usd_per_month: f64,
    /// Steady state under `policy` at the ingest rate of the last day.
    pub projected: Vec<CostLine>,
    pub projected_usd_per_month: f64,
    pub projected_all_hot_usd_per_month: f64,
    pub projected_saving_usd_per_month: f64,
    /// The workers' object-store requests at the last day's rate (the same now and in the
    /// projection: the lifecycle adds a few per table-hour).
    pub requests: RequestEstimate,
    /// Projected storage and requests together.
    pub projected_total_usd_per_month: f64,
    /// What to change when requests cost more than storage; `null` otherwise.
    pub advice: Option<String>,
    /// Inputs of the projection.
    pub policy: String,
    pub ingest_bytes_per_day: BTreeMap<String, u64>,
    pub compaction_ratio: BTreeMap<String, f64>,
}

impl CostModel {
    fn price(&self, tier: TierName) -> f64 {
        self.usd_per_gb_month.get(&tier).copied().unwrap_or(0.0)
    }

    /// The workers' requests per month when they write `batch_files_per_day`.
    pub fn requests(&self, batch_files_per_day: u64) -> RequestEstimate {
        let files_per_month = batch_files_per_day as f64 * MONTH_DAYS;
        let writes = files_per_month * self.write_requests_per_batch_file;
        let reads = files_per_month * self.read_requests_per_batch_file;
        RequestEstimate {
            batch_files_per_day,
            write_requests_per_month: writes,
            read_requests_per_month: reads,
            usd_per_month: writes / 1000.0 * self.usd_per_1000_write_requests
                + reads / 1000.0 * self.usd_per_1000_read_requests,
        }
    }

    /// The report for `usage` (from [`crate::usage::collect`]) under `policy`, projected
    /// from what the workers wrote in the last day ([`crate::usage::ingest_last_day`]).
    pub fn report(&self, usage: &[TierTableUsage], policy: &Policy, ingest: &IngestLastDay) -> CostReport {
        let recent_raw_bytes_per_day = &ingest.bytes;
        let mut current = Vec::new();
        let mut all_hot = 0.0;
        for u in usage {
            let tier = u.tier.parse().unwrap_or(TierName::Hot);
            current.push(CostLine {
                tier: u.tier.clone(),
                table: u.table.clone(),
                bytes: u.bytes,
                usd_per_month: u.bytes as f64 / GB * self.price(tier),
            });
            all_hot += u.raw_bytes as f64 / GB * self.price(TierName::Hot);
        }
        let current_total = current.iter().map(|l| l.usd_per_month).sum();

        // Per table and tier: bytes there over the bytes they were first written as (the
        // tier before it when nothing has reached it yet; 1.0 in hot).
        let mut ratio = BTreeMap::new();
        let mut tier_ratio: BTreeMap<(String, TierName), f64> = BTreeMap::new();
        for table in recent_raw_bytes_per_day.keys() {
            let mut last = 1.0;
            for tier in TierName::ALL {
                let (raw, now): (u64, u64) = usage
                    .iter()
                    .filter(|u| &u.table == table && u.tier == tier.as_str())
                    .fold((0, 0), |(r, b), u| (r + u.raw_bytes, b + u.bytes));
                if tier != TierName::Hot && raw > 0 && now > 0 {
                    last = now as f64 / raw as f64;
                }
                tier_ratio.insert((table.clone(), tier), last);
                if tier == TierName::Warm {
                    ratio.insert(table.clone(), last);
                }
            }
        }
        // Where a day-old byte lives: hot until the first step, then each step's tier until
        // the next one, until deletion (or a one-year horizon without a delete step).
        let mut spans: Vec<(TierName, f64, f64)> = Vec::new();
        let mut tier = TierName::Hot;
        let mut from = 0.0;
        let mut horizon = 365.0;
        for step in policy.steps.iter().filter(|s| !matches!(s, PolicyStep::Downsample { .. })) {
            let Ok(ms) = step.after_ms() else { continue };
            let at = ms as f64 / DAY_MS;
            spans.push((tier, from, at));
            from = at;
            match step {
                PolicyStep::Compact { .. } => tier = TierName::Warm,
                PolicyStep::Cold { .. } => tier = TierName::Cold,
                PolicyStep::Archive { .. } => tier = TierName::Archive,
                PolicyStep::Delete { .. } => {
                    horizon = at;
                    break;
                }
                PolicyStep::Downsample { .. } => {}
            }
        }
        if from < horizon {
            spans.push((tier, from, horizon));
        }
        let mut projected = Vec::new();
        let mut projected_all_hot = 0.0;
        for (table, per_day) in recent_raw_bytes_per_day {
            let per_day = *per_day as f64;
            for &(tier, from, to) in spans.iter().filter(|(_, f, t)| t > f) {
                let bytes = per_day * (to - from) * tier_ratio.get(&(table.clone(), tier)).copied().unwrap_or(1.0);
                projected.push(CostLine {
                    tier: tier.to_string(),
                    table: table.clone(),
                    bytes: bytes as u64,
                    usd_per_month: bytes / GB * self.price(tier),
                });
            }
            projected_all_hot += per_day * horizon / GB * self.price(TierName::Hot);
        }
        let projected_total: f64 = projected.iter().map(|l| l.usd_per_month).sum();
        let requests = self.requests(ingest.files);
        let advice = (requests.usd_per_month > projected_total).then(|| {
            format!(
                "object-store requests (${:.2}/month) cost more than storage (${:.2}/month): the workers write {} \
                 batch files a day, one per partition, table-hour and flush; a longer --flush-interval on the \
                 pipelines (default 1s) divides the requests by the same factor, at the price of fresher data",
                requests.usd_per_month, projected_total, requests.batch_files_per_day
            )
        });
        CostReport {
            prices_usd_per_gb_month: self.usd_per_gb_month.clone(),
            prices_usd_per_1000_requests: BTreeMap::from([
                ("write", self.usd_per_1000_write_requests),
                ("read", self.usd_per_1000_read_requests),
            ]),
            current,
            current_usd_per_month: current_total,
            current_all_hot_usd_per_month: all_hot,
            projected,
            projected_usd_per_month: projected_total,
            projected_all_hot_usd_per_month: projected_all_hot,
            projected_saving_usd_per_month: projected_all_hot - projected_total,
            projected_total_usd_per_month: projected_total + requests.usd_per_month,
            requests,
            advice,
            policy: policy.id.clone(),
            ingest_bytes_per_day: recent_raw_bytes_per_day.clone(),
            compaction_ratio: ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(tier: &str, table: &str, bytes: u64, raw: u64) -> TierTableUsage {
        TierTableUsage { tier: tier.into(), table: table.into(), bytes, raw_bytes: raw, ..Default::default() }
    }

    #[test]
    fn current_and_projected_costs_follow_the_policy() {
        let model = CostModel::default();
        let usage = vec![
            usage("hot", "metrics", 2_000_000_000, 2_000_000_000),
            usage("warm", "metrics", 1e9 as u64, 4e9 as u64),
        ];
        let per_day = IngestLastDay { bytes: BTreeMap::from([("metrics".to_string(), 1_000_000_000u64)]), files: 0 };
        let mut policy = Policy::default_policy();
        policy.steps.retain(|s| matches!(s, PolicyStep::Compact { .. } | PolicyStep::Delete { .. }));
        let report = model.report(&usage, &policy, &per_day);
        assert!((report.current_usd_per_month - (2.0 * 0.023 + 0.0125)).abs() < 1e-9);
        assert!((report.current_all_hot_usd_per_month - 6.0 * 0.023).abs() < 1e-9);
        assert_eq!(report.compaction_ratio["metrics"], 0.25);
        // 2 h hot, the rest of 730 days warm at a quarter of the size.
        let hot = 1e9 * (2.0 / 24.0) / 1e9 * 0.023;
        let warm = 1e9 * (730.0 - 2.0 / 24.0) * 0.25 / 1e9 * 0.0125;
        assert!((report.projected_usd_per_month - (hot + warm)).abs() < 1e-6, "{report:?}");
        assert!((report.projected_all_hot_usd_per_month - 730.0 * 0.023).abs() < 1e-6);
        assert!(report.projected_saving_usd_per_month > 0.0);

        // The default policy: hot, warm, cold (at warm's ratio until measured), archive.
        let report = model.report(&usage, &Policy::default_policy(), &per_day);
        let tiers: Vec<&str> = report.projected.iter().map(|l| l.tier.as_str()).collect();
        assert_eq!(tiers, ["hot", "warm", "cold", "archive"]);
        let cold = &report.projected[2];
        assert_eq!(cold.bytes, (1e9 * 83.0 * 0.25) as u64);
        assert!(report.projected_usd_per_month < hot + warm);
    }

    #[test]
    fn requests_are_priced_per_batch_file_and_advice_comes_when_they_dominate() {
        let model = CostModel::default();
        let usage = vec![usage("hot", "metrics", 1_000_000, 1_000_000)];
        // A small platform: 1 MB a day, but 4 partitions × 3 tables flushed every second.
        let small = IngestLastDay { bytes: BTreeMap::from([("metrics".to_string(), 1_000_000)]), files: 1_036_800 };
        let report = model.report(&usage, &Policy::default_policy(), &small);
        let files_per_month = 1_036_800.0 * 30.0;
        assert!((report.requests.write_requests_per_month - files_per_month * 6.6).abs() < 1.0);
        assert!((report.requests.read_requests_per_month - files_per_month * 4.2).abs() < 1.0);
        let usd = files_per_month * 6.6 / 1000.0 * 0.005 + files_per_month * 4.2 / 1000.0 * 0.0004;
        assert!((report.requests.usd_per_month - usd).abs() < 1e-6, "{report:?}");
        assert!(usd > 1000.0, "a thousand dollars a month of requests for a megabyte a day");
        assert!((report.projected_total_usd_per_month - (report.projected_usd_per_month + usd)).abs() < 1e-6);
        assert!(report.advice.as_deref().is_some_and(|a| a.contains("--flush-interval")), "{report:?}");
        // Flushing a hundred times less often, with a hundred times the data: storage leads.
        let big = IngestLastDay { bytes: BTreeMap::from([("metrics".to_string(), 100_000_000_000)]), files: 10_368 };
        let report = model.report(&usage, &Policy::default_policy(), &big);
        assert!(report.requests.usd_per_month < report.projected_usd_per_month, "{report:?}");
        assert_eq!(report.advice, None);
    }

    #[test]
    fn prices_come_from_json_with_defaults_for_what_it_leaves_out() {
        let model =
            CostModel::from_json(r#"{"usd_per_gb_month": {"hot": 0.026}, "usd_per_1000_write_requests": 0.0054}"#)
                .expect("prices");
        assert_eq!(model.usd_per_gb_month[&TierName::Hot], 0.026);
        assert_eq!(model.usd_per_gb_month[&TierName::Cold], 0.004, "a tier left out keeps its default");
        assert_eq!(model.usd_per_1000_write_requests, 0.0054);
        assert_eq!(model.usd_per_1000_read_requests, 0.0004);
        let typo = CostModel::from_json(r#"{"usd_per_gb_mnth": {}}"#).expect_err("unknown field");
        assert!(typo.to_string().contains("usd_per_gb_mnth"), "{typo}");
        let tier = CostModel::from_json(r#"{"usd_per_gb_month": {"lukewarm": 1}}"#).expect_err("unknown tier");
        assert!(tier.to_string().contains("lukewarm"), "{tier}");
        let negative = CostModel::from_json(r#"{"usd_per_1000_read_requests": -1}"#).expect_err("negative");
        assert!(negative.to_string().contains("usd_per_1000_read_requests"), "{negative}");
    }
}
