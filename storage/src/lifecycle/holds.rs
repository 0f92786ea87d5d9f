//! Legal holds: a table and time range (optionally narrowed by labels) whose data no
//! retention step may delete until the hold is released.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::file_catalog::DataTable;
use crate::layout::HourPartition;

/// One legal hold. A hold narrowed by labels still keeps whole table-hours: retention
/// deletes table-hours, and any of them in range may hold a matching row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    pub id: String,
    /// Tables held; empty: every table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Held time range in unix ms (`[start_ms, end_ms)`); a missing bound is open.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Labels of the rows the hold is about (recorded; see the type's docs).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub reason: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub released_at_ms: Option<i64>,
}

impl LegalHold {
    pub fn is_active(&self) -> bool {
        self.released_at_ms.is_none()
    }

    /// Whether this hold forbids deleting `table`'s rows in `[start_ms, end_ms)`.
    pub fn blocks(&self, table: DataTable, start_ms: i64, end_ms: i64) -> bool {
        self.is_active()
            && (self.tables.is_empty() || self.tables.iter().any(|t| t == table.name()))
            && self.start_ms.is_none_or(|s| end_ms > s)
            && self.end_ms.is_none_or(|e| start_ms < e)
    }
}

/// Whether any of `holds` forbids deleting `table`'s rows of `hour`.
pub fn any_blocks(holds: &[LegalHold], table: DataTable, hour: &HourPartition) -> bool {
    holds.iter().any(|h| h.blocks(table, hour.start_ms(), hour.end_ms()))
}

#[cfg(test)]
mod tests {
    use callscope_schemas::Dataset;

    use super::*;

    #[test]
    fn a_hold_blocks_its_tables_and_range_until_released() {
        let mut hold = LegalHold {
            id: "case-7".into(),
            tables: vec!["spans".into()],
            start_ms: Some(1000),
            end_ms: Some(2000),
            labels: BTreeMap::new(),
            reason: "litigation".into(),
            created_at_ms: 0,
            released_at_ms: None,
        };
        let spans = DataTable::Events(Dataset::Spans);
        assert!(hold.blocks(spans, 0, 1001));
        assert!(hold.blocks(spans, 1999, 5000));
        assert!(!hold.blocks(spans, 2000, 5000));
        assert!(!hold.blocks(spans, 0, 1000));
        assert!(!hold.blocks(DataTable::Events(Dataset::Metrics), 0, 5000));
        hold.released_at_ms = Some(10);
        assert!(!hold.blocks(spans, 0, 5000));
    }
}
