//! Lifecycle policies: for some tables, a list of steps, each applied to the table-hours
//! older than its age.
//!
//! ```json
//! {"id": "default", "tables": [], "steps": [
//!   {"action": "compact", "after": "2h"},
//!   {"action": "cold", "after": "7d"},
//!   {"action": "archive", "after": "90d"},
//!   {"action": "delete", "after": "730d"}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::file_catalog::DataTable;

/// One lifecycle policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Tables the policy applies to (`metrics`, `spans`, `alerts`, `metric_rollups`);
    /// empty: every table.
    #[serde(default)]
    pub tables: Vec<String>,
    pub steps: Vec<PolicyStep>,
    /// Whether the schedule runs it (a disabled policy still runs when triggered).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// One step of a policy. `after` is an age (`90m`, `2h`, `7d`, `730d`) measured from the
/// end of a table-hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyStep {
    /// Merge each table-hour's small hot files (and late arrivals) into sorted,
    /// compressed files in the warm tier.
    Compact { after: String },
    /// For roll-up table-hours of resolution `from`: write the same windows merged into
    /// each coarser resolution of `to` (partials and sketches merged) into the cold tier,
    /// as table-hours of their own (`metric_rollups/resolution=<to>/…`). Each of `to` must
    /// be a multiple of `from` and divide an hour. It adds data and moves nothing, so it
    /// runs beside whichever other step a table-hour is due for.
    ///
    /// With `delete_source_after`, the `from` roll-ups of an hour are deleted once that old
    /// (after its downsampled hours are written): fine roll-ups are kept while dashboards
    /// look at minutes, and series queries answer older hours from the coarse roll-ups
    /// or, at steps those do not tile, from raw samples.
    ///
    /// With `drop_sparse_below`, once an hour is downsampled, the metric names whose `from`
    /// windows hold fewer samples than that on average (a 1-minute window of a series
    /// scraped every 15 s holds 4) are dropped from the source hour, provided the hour's raw
    /// samples of that name are all there: such a roll-up row weighs more than the samples
    /// it summarises, and queries read those names' raw samples instead (see
    /// [`crate::lifecycle::sparse`]).
    Downsample {
        after: String,
        from: String,
        to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delete_source_after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drop_sparse_below: Option<u32>,
    },
    /// Rewrite each table-hour into the cold tier, densely encoded: measurement columns
    /// as exact decimals where every value allows it (delta-encoded integers), else as
    /// doubles. Once a whole day is due, its roll-up hours of each resolution (but the one
    /// a `downsample` step reads) are packed into shared day files
    /// ([`crate::lifecycle::day_files`]).
    Cold { after: String },
    /// Rewrite each table-hour into the archive tier at maximum compression, plain Parquet
    /// in the Hive layout for DuckDB and Spark.
    Archive { after: String },
    /// Delete each table-hour (every tier), unless a legal hold covers it.
    Delete { after: String },
}

impl PolicyStep {
    pub fn name(&self) -> &'static str {
        match self {
            PolicyStep::Compact { .. } => "compact",
            PolicyStep::Downsample { .. } => "downsample",
            PolicyStep::Cold { .. } => "cold",
            PolicyStep::Archive { .. } => "archive",
            PolicyStep::Delete { .. } => "delete",
        }
    }

    /// Where the step takes a unit, in the order steps must come in.
    fn rank(&self) -> u8 {
        match self {
            PolicyStep::Compact { .. } => 1,
            PolicyStep::Downsample { .. } => 2,
            PolicyStep::Cold { .. } => 3,
            PolicyStep::Archive { .. } => 4,
            PolicyStep::Delete { .. } => 5,
        }
    }

    pub fn after(&self) -> &str {
        match self {
            PolicyStep::Compact { after }
            | PolicyStep::Downsample { after, .. }
            | PolicyStep::Cold { after }
            | PolicyStep::Archive { after }
            | PolicyStep::Delete { after } => after,
        }
    }

    /// The step's age in milliseconds.
    pub fn after_ms(&self) -> Result<i64, PolicyError> {
        parse_age(self.after())
    }
}

/// Why a policy is not valid; `field` names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError { field: field.into(), reason: reason.into() }
}

/// Parses an age such as `90m`, `2h`, `7d` into milliseconds.
pub fn parse_age(text: &str) -> Result<i64, PolicyError> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| invalid("after", format!("{text:?} is not an age such as 90m, 2h or 7d ({e})")))?;
    i64::try_from(duration.as_millis()).map_err(|_| invalid("after", format!("{text:?} is too long")))
}

impl Policy {
    /// The built-in policy: hot for 2 hours, warm until 7 days, cold until 90 days,
    /// archived until two years, then deleted. 1-minute roll-ups are downsampled to 15
    /// minutes after 3 hours and kept for 7 days (the 1-hour ones the workers write stay);
    /// names whose 1-minute windows hold fewer than 8 samples are dropped from them once
    /// downsampled (their raw samples answer).
    pub fn default_policy() -> Policy {
        Policy {
            id: "default".into(),
            description: "Each table-hour: compacted into warm 2 h after it ends, cold after 7 days, \
                          archived after 90 days, deleted after 730 days. 1-minute roll-ups: downsampled \
                          to 15 minutes after 3 h, deleted after 7 days; names with fewer than 8 samples a \
                          minute dropped from them once downsampled (raw samples answer them)."
                .into(),
            tables: Vec::new(),
            steps: vec![
                PolicyStep::Compact { after: "2h".into() },
                PolicyStep::Downsample {
                    after: "3h".into(),
                    from: "1m".into(),
                    to: vec!["15m".into()],
                    delete_source_after: Some("7d".into()),
                    drop_sparse_below: Some(8),
                },
                PolicyStep::Cold { after: "7d".into() },
                PolicyStep::Archive { after: "90d".into() },
                PolicyStep::Delete { after: "730d".into() },
            ],
            enabled: true,
        }
    }

    /// Checks the policy; the error names the field at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.id.is_empty()
            || self.id.len() > crate::json_objects::MAX_STORED_ID_LEN
            || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid("id", format!("{:?} must be 1 to 200 letters, digits, '-' or '_'", self.id)));
        }
        for (i, table) in self.tables.iter().enumerate() {
            if DataTable::from_name(table).is_none() {
                return Err(invalid(
                    format!("tables[{i}]"),
                    format!("unknown table {table:?} (metrics, spans, alerts, metric_rollups)"),
                ));
            }
        }
        if self.steps.is_empty() {
            return Err(invalid("steps", "a policy needs at least one step"));
        }
        let mut previous = -1;
        for (i, step) in self.steps.iter().enumerate() {
            let after = step.after_ms().map_err(|e| invalid(format!("steps[{i}].after"), e.reason))?;
            if after <= previous {
                return Err(invalid(format!("steps[{i}].after"), "ages must increase from one step to the next"));
            }
            previous = after;
            if i > 0 && step.rank() <= self.steps[i - 1].rank() {
                return Err(invalid(
                    format!("steps[{i}]"),
                    "steps go one way, each at most once: compact, downsample, cold, archive, delete",
                ));
            }
            if let PolicyStep::Downsample { from, to, delete_source_after, drop_sparse_below, .. } = step {
                if drop_sparse_below.is_some_and(|n| !(2..=100_000).contains(&n)) {
                    return Err(invalid(
                        format!("steps[{i}].drop_sparse_below"),
                        "samples per window must be between 2 and 100000",
                    ));
                }
                if let Some(keep) = delete_source_after {
                    let field = format!("steps[{i}].delete_source_after");
                    if parse_age(keep).map_err(|e| invalid(&field, e.reason))? < after {
                        return Err(invalid(field, "the source can be deleted only once it has been downsampled"));
                    }
                }
                let from_ms = parse_age(from).map_err(|e| invalid(format!("steps[{i}].from"), e.reason))?;
                if from_ms <= 0 {
                    return Err(invalid(format!("steps[{i}].from"), "a resolution must be positive"));
                }
                if to.is_empty() {
                    return Err(invalid(format!("steps[{i}].to"), "name at least one coarser resolution"));
                }
                for (j, target) in to.iter().enumerate() {
                    let field = format!("steps[{i}].to[{j}]");
                    let to_ms = parse_age(target).map_err(|e| invalid(&field, e.reason))?;
                    if to_ms <= from_ms || to_ms % from_ms != 0 || 3_600_000 % to_ms != 0 {
                        return Err(invalid(
                            field,
                            format!("{target:?} must be a multiple of {from:?} that divides an hour (5m, 15m, 1h, …)"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The policy's `downsample` step, parsed (steps go each at most once).
    pub fn downsampling(&self) -> Result<Option<Downsampling>, PolicyError> {
        for step in &self.steps {
            if let PolicyStep::Downsample { from, to, delete_source_after, drop_sparse_below, .. } = step {
                return Ok(Some(Downsampling {
                    drop_sparse_below: *drop_sparse_below,
                    after: step.after_ms()?,
                    from: parse_age(from)?,
                    to: to.iter().map(|t| parse_age(t)).collect::<Result<_, _>>()?,
                    delete_source_after: match delete_source_after {
                        Some(text) => Some((parse_age(text)?, text.clone())),
                        None => None,
                    },
                }));
            }
        }
        Ok(None)
    }

    /// The tables this policy applies to.
    pub fn tables(&self) -> Vec<DataTable> {
        if self.tables.is_empty() {
            return DataTable::ALL.to_vec();
        }
        self.tables.iter().filter_map(|t| DataTable::from_name(t)).collect()
    }
}

/// A policy's downsampling step, its ages and resolutions in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Downsampling {
    pub after: i64,
    pub from: i64,
    pub to: Vec<i64>,
    /// The age after which source hours are deleted, and as the policy wrote it.
    pub delete_source_after: Option<(i64, String)>,
    /// Samples per window below which a name is dropped from a downsampled source hour.
    pub drop_sparse_below: Option<u32>,
}

impl Downsampling {
    /// When `unit` is a source hour (of resolution `from`) old enough to be deleted: the
    /// age it was kept for, as the policy wrote it.
    pub fn drops(&self, unit: &str, age: i64) -> Option<String> {
        let (keep, text) = self.delete_source_after.as_ref()?;
        (age >= *keep && crate::layout::rollup_resolution_ms(unit) == Some(self.from)).then(|| text.clone())
    }

    /// Why a source hour is deleted, for the deletion log.
    pub fn reason(&self, policy: &str) -> String {
        let label = callscope_schemas::rollup::resolution_label;
        let kept = self.delete_source_after.as_ref().map_or("", |(_, text)| text.as_str());
        format!(
            "policy {policy}: {} roll-ups downsampled to {} and kept {kept}",
            label(self.from),
            self.to.iter().map(|t| label(*t)).collect::<Vec<_>>().join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid_and_reads_back() {
        let policy = Policy::default_policy();
        policy.validate().expect("valid");
        let json = serde_json::to_string(&policy).expect("json");
        assert!(json.contains(r#"{"action":"compact","after":"2h"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Policy>(&json).expect("parse"), policy);
        assert_eq!(policy.tables().len(), 4);
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("2h"), Ok(7_200_000));
        assert_eq!(parse_age("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_age("90m"), Ok(5_400_000));
        assert_eq!(parse_age("soon").expect_err("invalid").field, "after");
    }

    #[test]
    fn errors_name_the_field() {
        let mut p = Policy::default_policy();
        p.tables = vec!["metrics".into(), "calls".into()];
        assert_eq!(p.validate().expect_err("invalid").field, "tables[1]");
        let mut p = Policy::default_policy();
        p.steps = vec![PolicyStep::Delete { after: "1d".into() }, PolicyStep::Compact { after: "2d".into() }];
        assert_eq!(p.validate().expect_err("invalid").field, "steps[1]", "nothing after delete");
        p.steps = vec![PolicyStep::Archive { after: "1d".into() }, PolicyStep::Cold { after: "2d".into() }];
        assert_eq!(p.validate().expect_err("invalid").field, "steps[1]", "cold after archive");
        let mut p = Policy::default_policy();
        p.steps = vec![PolicyStep::Compact { after: "2d".into() }, PolicyStep::Delete { after: "1d".into() }];
        assert_eq!(p.validate().expect_err("invalid").field, "steps[1].after");
        let mut p = Policy::default_policy();
        p.id = "a b".into();
        assert_eq!(p.validate().expect_err("invalid").field, "id");
        assert!(serde_json::from_str::<Policy>(r#"{"id":"x","steps":[{"action":"melt","after":"1d"}]}"#).is_err());
        let mut p = Policy::default_policy();
        let down = |to: &[&str]| PolicyStep::Downsample {
            after: "1d".into(),
            from: "1m".into(),
            to: to.iter().map(|t| t.to_string()).collect(),
            delete_source_after: None,
            drop_sparse_below: None,
        };
        p.steps = vec![PolicyStep::Compact { after: "2h".into() }, down(&["5m", "1h"])];
        p.validate().expect("valid downsampling");
        p.steps = vec![PolicyStep::Compact { after: "2h".into() }, down(&["5m", "7m"])];
        assert_eq!(p.validate().expect_err("invalid").field, "steps[1].to[1]");
        p.steps = vec![down(&["90s"])];
        assert_eq!(p.validate().expect_err("invalid").field, "steps[0].to[0]", "not a multiple of 1m");
        let thinning = |keep: &str| PolicyStep::Downsample {
            after: "1d".into(),
            from: "1m".into(),
            to: vec!["15m".into()],
            delete_source_after: Some(keep.into()),
            drop_sparse_below: None,
        };
        for (keep, ok) in [("7d", true), ("1d", true), ("12h", false), ("soon", false)] {
            p.steps = vec![thinning(keep)];
            match p.validate() {
                Ok(()) => assert!(ok, "{keep}"),
                Err(e) => assert_eq!((ok, e.field.as_str()), (false, "steps[0].delete_source_after"), "{keep}"),
            }
        }
        for (below, ok) in [(8, true), (2, true), (1, false), (0, false)] {
            p.steps = vec![PolicyStep::Downsample {
                after: "1d".into(),
                from: "1m".into(),
                to: vec!["15m".into()],
                delete_source_after: None,
                drop_sparse_below: Some(below),
            }];
            match p.validate() {
                Ok(()) => assert!(ok, "{below}"),
                Err(e) => assert_eq!((ok, e.field.as_str()), (false, "steps[0].drop_sparse_below"), "{below}"),
            }
        }
        let parsed: Policy = serde_json::from_str(
            r#"{"id":"x","steps":[{"action":"downsample","after":"3h","from":"1m","to":["15m"],"drop_sparse_below":8}]}"#,
        )
        .expect("parse");
        assert_eq!(parsed.downsampling().expect("valid").and_then(|d| d.drop_sparse_below), Some(8));
    }
}
