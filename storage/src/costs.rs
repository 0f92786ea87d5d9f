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
//! estimate scales that by the batch files of the last day; queries' own reads are left
//! out.
//!
//! The lifecycle's requests are priced at the storage class of the tier they go to: each
//! step reads the files of a table-hour from its source tier (compaction reads every batch
//! file once) and writes the new files to its target tier, and writes its manifest and
//! reads the hour's records in the hot tier ([`LIFECYCLE_CATALOG_WRITES`],
//! [`LIFECYCLE_CATALOG_READS`] per table-hour and step); deletions are free on S3. Files per
//! table-hour are the measured ones of each tier where it holds data (one otherwise).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::file_catalog::DataTable;
use crate::lifecycle::policy::{Policy, PolicyStep};
use crate::tiers::TierName;
use crate::usage::{IngestLastDay, TierTableUsage};

/// Prices: per GB-month of each tier, per 1 000 requests of the hot tier's class (where the
/// workers write) and of the other tiers' classes (where the lifecycle writes); and the
/// requests that come with each batch file. Read from a JSON
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
    /// Request prices of the warm, cold and archive tiers' classes (the hot tier's are the
    /// two fields above).
    pub usd_per_1000_requests_by_tier: BTreeMap<TierName, RequestPrices>,
}

/// Prices per 1 000 requests of one storage class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPrices {
    /// PUT, COPY, POST and LIST.
    pub write: f64,
    /// GET and the rest.
    pub read: f64,
}

/// Catalog writes in the hot tier per table-hour and lifecycle step: the hour's manifest,
/// and the claim that keeps two runners off one hour.
pub const LIFECYCLE_CATALOG_WRITES: f64 = 2.0;
/// Catalog reads per table-hour and step: the listing and the manifest of the hour.
pub const LIFECYCLE_CATALOG_READS: f64 = 2.0;

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
            usd_per_1000_requests_by_tier: default_request_prices(),
        }
    }
}

/// S3 Standard-IA (warm), Glacier Instant Retrieval (cold), Glacier Deep Archive (archive),
/// us-east-1 list prices.
fn default_request_prices() -> BTreeMap<TierName, RequestPrices> {
    BTreeMap::from([
        (TierName::Warm, RequestPrices { write: 0.01, read: 0.001 }),
        (TierName::Cold, RequestPrices { write: 0.02, read: 0.01 }),
        (TierName::Archive, RequestPrices { write: 0.05, read: 0.0004 }),
    ])
}

/// A price file that does not parse or holds a price that is not a finite, non-negative number.
#[derive(Debug, thiserror::Error)]
#[error("cost model: {0}")]
pub struct CostModelError(String);

/// A policy's downsampling that deletes its source, as the projection needs it.
struct Thinning {
    after_days: f64,
    source_kept_days: f64,
    source_bytes_per_day: u64,
    /// Bytes of the downsampled hours per first-written byte of their source: measured
    /// from the catalog where it holds some, else in proportion to their rows.
    coarse_per_source_byte: f64,
}

impl Thinning {
    fn of(policy: &Policy, ingest: &IngestLastDay) -> Option<Thinning> {
        let d = policy.downsampling().ok()??;
        let (keep, _) = d.delete_source_after?;
        let coarse_per_source_byte =
            d.to.iter().map(|to| ingest.downsampled_ratio.get(to).copied().unwrap_or(d.from as f64 / *to as f64)).sum();
        Some(Thinning {
            after_days: d.after as f64 / DAY_MS,
            source_kept_days: keep as f64 / DAY_MS,
            source_bytes_per_day: ingest.rollup_bytes.get(&d.from).copied().unwrap_or(0),
            coarse_per_source_byte,
        })
    }
}

impl CostModel {
    /// Prices from JSON, e.g. `{"usd_per_gb_month": {"hot": 0.026}, "usd_per_1000_write_requests":
    /// 0.0054}`: a tier or field left out keeps its default; unknown fields are refused.
    pub fn from_json(text: &str) -> Result<CostModel, CostModelError> {
        let mut model: CostModel = serde_json::from_str(text).map_err(|e| CostModelError(e.to_string()))?;
        for (tier, price) in CostModel::default().usd_per_gb_month {
            model.usd_per_gb_month.entry(tier).or_insert(price);
        }
        if model.usd_per_1000_requests_by_tier.contains_key(&TierName::Hot) {
            return Err(CostModelError(
                "usd_per_1000_requests_by_tier.hot: the hot tier's request prices are usd_per_1000_write_requests \
                 and usd_per_1000_read_requests"
                    .into(),
            ));
        }
        for (tier, prices) in default_request_prices() {
            model.usd_per_1000_requests_by_tier.entry(tier).or_insert(prices);
        }
        let by_tier: Vec<(String, f64)> = model
            .usd_per_1000_requests_by_tier
            .iter()
            .flat_map(|(t, p)| {
                [
                    (format!("usd_per_1000_requests_by_tier.{t}.write"), p.write),
                    (format!("usd_per_1000_requests_by_tier.{t}.read"), p.read),
                ]
            })
            .collect();
        let prices = model.usd_per_gb_month.iter().map(|(t, p)| (format!("usd_per_gb_month.{t}"), *p)).chain([
            ("usd_per_1000_write_requests".to_string(), model.usd_per_1000_write_requests),
            ("usd_per_1000_read_requests".to_string(), model.usd_per_1000_read_requests),
            ("write_requests_per_batch_file".to_string(), model.write_requests_per_batch_file),
            ("read_requests_per_batch_file".to_string(), model.read_requests_per_batch_file),
        ]);
        let prices = prices.chain(by_tier);
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

/// The lifecycle's requests in one tier per month, at the last day's rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TierRequests {
    pub write_requests_per_month: f64,
    pub read_requests_per_month: f64,
    pub usd_per_month: f64,
}

/// The lifecycle's object-store requests per month under the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LifecycleRequests {
    /// Table-hours that pass through each step in a month (one per table and hour).
    pub table_hours_per_month: f64,
    pub by_tier: BTreeMap<TierName, TierRequests>,
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
    /// The lifecycle's own requests (reads of each step's source tier, writes to its target,
    /// catalog objects in hot), each at its tier's class.
    pub lifecycle_requests: LifecycleRequests,
    /// Projected storage and requests (the workers' and the lifecycle's) together.
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

    fn request_prices(&self, tier: TierName) -> RequestPrices {
        let hot = RequestPrices { write: self.usd_per_1000_write_requests, read: self.usd_per_1000_read_requests };
        match tier {
            TierName::Hot => hot,
            tier => self.usd_per_1000_requests_by_tier.get(&tier).copied().unwrap_or(hot),
        }
    }

    /// The lifecycle's requests per month: every table with ingest passes each hour through
    /// each step of `policy` (downsampling left out: it adds a few files of roll-ups).
    pub fn lifecycle_requests(
        &self,
        usage: &[TierTableUsage],
        policy: &Policy,
        ingest: &IngestLastDay,
    ) -> LifecycleRequests {
        let hours = ingest.bytes.len() as f64 * 24.0 * MONTH_DAYS;
        // Files per table-hour in a tier, as measured there (one where it holds nothing yet).
        let files_per_hour = |tier: TierName| {
            let (files, hours) = usage
                .iter()
                .filter(|u| u.tier == tier.as_str() && ingest.bytes.contains_key(&u.table))
                .fold((0, 0), |(f, h), u| (f + u.files, h + u.hours));
            if hours == 0 { 1.0 } else { files as f64 / hours as f64 }
        };
        let mut counts: BTreeMap<TierName, (f64, f64)> = BTreeMap::new();
        let mut add = |tier: TierName, writes: f64, reads: f64| {
            let c = counts.entry(tier).or_default();
            c.0 += writes;
            c.1 += reads;
        };
        let mut source = TierName::Hot;
        for step in &policy.steps {
            let target = match step {
                PolicyStep::Compact { .. } => TierName::Warm,
                PolicyStep::Cold { .. } => TierName::Cold,
                PolicyStep::Archive { .. } => TierName::Archive,
                PolicyStep::Delete { .. } => {
                    // Deletions are free; the hour's manifest is still written.
                    add(TierName::Hot, hours * LIFECYCLE_CATALOG_WRITES, hours * LIFECYCLE_CATALOG_READS);
                    break;
                }
                PolicyStep::Downsample { .. } => continue,
            };
            // Compaction reads every batch file the workers wrote; later steps the files of
            // their source tier.
            let reads =
                if source == TierName::Hot { ingest.files as f64 * MONTH_DAYS } else { hours * files_per_hour(source) };
            add(source, 0.0, reads);
            add(target, hours * files_per_hour(target), 0.0);
            add(TierName::Hot, hours * LIFECYCLE_CATALOG_WRITES, hours * LIFECYCLE_CATALOG_READS);
            source = target;
        }
        let by_tier: BTreeMap<TierName, TierRequests> = counts
            .into_iter()
            .map(|(tier, (writes, reads))| {
                let prices = self.request_prices(tier);
                let usd_per_month = writes / 1000.0 * prices.write + reads / 1000.0 * prices.read;
                let requests =
                    TierRequests { write_requests_per_month: writes, read_requests_per_month: reads, usd_per_month };
                (tier, requests)
            })
            .collect();
        let usd_per_month = by_tier.values().map(|t| t.usd_per_month).sum();
        LifecycleRequests { table_hours_per_month: hours, by_tier, usd_per_month }
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
                    // Downsampled hours have no first-written bytes: the projection adds
                    // them on their own.
                    .fold((0, 0), |(r, b), u| (r + u.raw_bytes, b + u.bytes.saturating_sub(u.derived_bytes)));
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
        let thinning = Thinning::of(policy, ingest);
        for (table, per_day) in recent_raw_bytes_per_day {
            let per_day = *per_day as f64;
            let mut by_tier: BTreeMap<TierName, f64> = BTreeMap::new();
            // Downsampled roll-ups whose source is deleted after an age: the source's bytes
            // live until then, the rest of the table's for the whole policy, and the coarse
            // hours (written into cold) from the downsampling age on.
            let (kept_until, source, coarse) = match &thinning {
                Some(t) if table == DataTable::Rollups.name() => {
                    let source = (t.source_bytes_per_day as f64).min(per_day);
                    (t.source_kept_days, source, Some((t.after_days, source * t.coarse_per_source_byte)))
                }
                _ => (horizon, 0.0, None),
            };
            for &(tier, from, to) in spans.iter().filter(|(_, f, t)| t > f) {
                let ratio = tier_ratio.get(&(table.clone(), tier)).copied().unwrap_or(1.0);
                let source_days = (to.min(kept_until) - from).max(0.0);
                *by_tier.entry(tier).or_default() += ((per_day - source) * (to - from) + source * source_days) * ratio;
                if let Some((after, coarse_per_day)) = coarse {
                    let days = (to - from.max(after)).max(0.0);
                    *by_tier.entry(tier.max(TierName::Cold)).or_default() += coarse_per_day * days;
                }
            }
            for (tier, bytes) in by_tier.into_iter().filter(|(_, b)| *b > 0.0) {
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
        let lifecycle_requests = self.lifecycle_requests(usage, policy, ingest);
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
            projected_total_usd_per_month: projected_total + requests.usd_per_month + lifecycle_requests.usd_per_month,
            lifecycle_requests,
            requests,
            advice,
            policy: policy.id.clone(),
            ingest_bytes_per_day: recent_raw_bytes_per_day.clone(),
            compaction_ratio: ratio,
        }
    }
}

#[cfg(test)]
mod tests;
