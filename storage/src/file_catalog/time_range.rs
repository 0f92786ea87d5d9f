//! The time range a query's filters allow, so that a scan lists and reads only the units
//! (table-hours) that can hold matching rows.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::DataTable;

/// A half-open range of unix milliseconds, `[start_ms, end_ms)`; a missing bound is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// Ranges longer than this are listed table-wide rather than date by date.
const MAX_LISTED_DAYS: i64 = 400;

impl TimeRange {
    pub fn new(start_ms: i64, end_ms: i64) -> TimeRange {
        TimeRange { start_ms: Some(start_ms), end_ms: Some(end_ms) }
    }

    /// Whether `[start_ms, end_ms)` meets this range.
    pub fn overlaps(&self, start_ms: i64, end_ms: i64) -> bool {
        self.start_ms.is_none_or(|s| end_ms > s) && self.end_ms.is_none_or(|e| start_ms < e)
    }

    pub fn is_empty(&self) -> bool {
        matches!((self.start_ms, self.end_ms), (Some(s), Some(e)) if e <= s)
    }

    /// The UTC dates (`YYYY-MM-DD`) the range touches, when it is bounded and short enough
    /// to list date by date.
    pub fn dates(&self) -> Option<Vec<String>> {
        let (start, end) = (self.start_ms?, self.end_ms?);
        if end <= start {
            return Some(Vec::new());
        }
        let first = start.div_euclid(86_400_000);
        let last = (end - 1).div_euclid(86_400_000);
        if last - first > MAX_LISTED_DAYS {
            return None;
        }
        (first..=last)
            .map(|day| {
                chrono::DateTime::from_timestamp_millis(day * 86_400_000).map(|t| t.format("%Y-%m-%d").to_string())
            })
            .collect()
    }

    fn narrow_start(&mut self, ms: i64) {
        self.start_ms = Some(self.start_ms.map_or(ms, |s| s.max(ms)));
    }

    fn narrow_end(&mut self, ms: i64) {
        self.end_ms = Some(self.end_ms.map_or(ms, |e| e.min(ms)));
    }

    /// The range that the conjunction of `filters` allows for `table`'s time columns
    /// (`timestamp_ms`/`event_time` and the like, and the `date` partition column). Filters
    /// it does not understand leave the range open: the scan then reads more, never less.
    pub fn from_filters(table: DataTable, filters: &[Expr]) -> TimeRange {
        let mut range = TimeRange::default();
        for filter in filters {
            range.narrow_by(table, filter);
        }
        range
    }

    fn narrow_by(&mut self, table: DataTable, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.narrow_by(table, left);
                self.narrow_by(table, right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, right.as_ref()),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, swapped, left.as_ref()),
                        None => return,
                    },
                    _ => return,
                };
                let Some(bound) = Bound::of(table, column, value) else { return };
                match op {
                    Operator::Eq => {
                        self.narrow_start(bound.first_ms);
                        self.narrow_end(bound.end_ms);
                    }
                    Operator::Gt | Operator::GtEq => self.narrow_start(bound.first_ms),
                    Operator::Lt => self.narrow_end(bound.lt_end_ms),
                    Operator::LtEq => self.narrow_end(bound.end_ms),
                    _ => {}
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                let Some(column) = column_name(expr) else { return };
                if let Some(low) = Bound::of(table, column, low) {
                    self.narrow_start(low.first_ms);
                }
                if let Some(high) = Bound::of(table, column, high) {
                    self.narrow_end(high.end_ms);
                }
            }
            _ => {}
        }
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(cast) => column_name(&cast.expr),
        Expr::TryCast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

/// What one literal compared with a time column says, in unix ms: the first millisecond it
/// may denote, the end (exclusive) of the milliseconds it may denote, and the exclusive
/// end for a strict `<` comparison.
struct Bound {
    first_ms: i64,
    end_ms: i64,
    lt_end_ms: i64,
}

impl Bound {
    fn of(table: DataTable, column: &str, value: &Expr) -> Option<Bound> {
        let Expr::Literal(value, _) = value else { return None };
        let (time_column, units_per_ms) = table.time_column();
        if column == time_column {
            let v = match value {
                ScalarValue::Int64(Some(v)) => *v,
                ScalarValue::Int32(Some(v)) => i64::from(*v),
                _ => return None,
            };
            let first = v.div_euclid(units_per_ms);
            // `< v`: the last allowed value is v - 1, in ms that is (v - 1) / units.
            return Some(Bound {
                first_ms: first,
                end_ms: first.saturating_add(1),
                lt_end_ms: (v.saturating_sub(1)).div_euclid(units_per_ms).saturating_add(1),
            });
        }
        if column == table.timestamp_column() {
            let (v, per_ms) = match value {
                ScalarValue::TimestampSecond(Some(v), _) => (v.checked_mul(1000)?, 1),
                ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1),
                ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1000),
                ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000),
                _ => return None,
            };
            let first = v.div_euclid(per_ms);
            return Some(Bound {
                first_ms: first,
                end_ms: first.saturating_add(1),
                lt_end_ms: (v.saturating_sub(1)).div_euclid(per_ms).saturating_add(1),
            });
        }
        if column == "date" {
            let text = match value {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s,
                _ => return None,
            };
            let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            let first = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
            return Some(Bound { first_ms: first, end_ms: first + 86_400_000, lt_end_ms: first });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn metrics() -> DataTable {
        DataTable::Events(callscope_schemas::Dataset::Metrics)
    }

    #[test]
    fn millisecond_bounds() {
        let r = TimeRange::from_filters(
            metrics(),
            &[col("timestamp_ms").gt_eq(lit(1000_i64)), col("timestamp_ms").lt(lit(5000_i64))],
        );
        assert_eq!(r, TimeRange::new(1000, 5000));
        let r = TimeRange::from_filters(metrics(), &[lit(5000_i64).gt(col("timestamp_ms"))]);
        assert_eq!(r, TimeRange { start_ms: None, end_ms: Some(5000) });
        let r = TimeRange::from_filters(metrics(), &[col("timestamp_ms").lt_eq(lit(5000_i64))]);
        assert_eq!(r.end_ms, Some(5001));
        let r = TimeRange::from_filters(metrics(), &[col("timestamp_ms").between(lit(10_i64), lit(20_i64))]);
        assert_eq!(r, TimeRange::new(10, 21));
    }

    #[test]
    fn microsecond_and_timestamp_bounds() {
        let spans = DataTable::Events(callscope_schemas::Dataset::Spans);
        let r = TimeRange::from_filters(
            spans,
            &[col("start_time_us").gt_eq(lit(1_500_i64)), col("start_time_us").lt(lit(3_001_i64))],
        );
        assert_eq!(r, TimeRange::new(1, 4));
        let ts = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into())));
        let r =
            TimeRange::from_filters(spans, &[col("start_time").gt_eq(ts(2_000)).and(col("start_time").lt(ts(9_000)))]);
        assert_eq!(r, TimeRange::new(2, 9));
    }

    #[test]
    fn date_partition_and_unknown_filters() {
        let r = TimeRange::from_filters(metrics(), &[col("date").eq(lit("1970-01-02"))]);
        assert_eq!(r, TimeRange::new(86_400_000, 2 * 86_400_000));
        assert_eq!(r.dates(), Some(vec!["1970-01-02".to_string()]));
        let open =
            TimeRange::from_filters(metrics(), &[col("name").eq(lit("x")), col("timestamp_ms").gt_eq(col("value"))]);
        assert_eq!(open, TimeRange::default());
        assert_eq!(open.dates(), None);
        let either = TimeRange::from_filters(
            metrics(),
            &[col("timestamp_ms").lt(lit(5_i64)).or(col("timestamp_ms").gt(lit(9_i64)))],
        );
        assert_eq!(either, TimeRange::default(), "an OR is not narrowed");
    }

    #[test]
    fn overlap_and_dates() {
        let r = TimeRange::new(3_600_000, 7_200_000);
        assert!(r.overlaps(0, 3_600_001));
        assert!(!r.overlaps(0, 3_600_000));
        assert!(!r.overlaps(7_200_000, 10_800_000));
        assert_eq!(TimeRange::new(0, 2 * 86_400_000).dates().map(|d| d.len()), Some(2));
        assert_eq!(TimeRange::new(0, 1000 * 86_400_000).dates(), None);
        assert!(TimeRange::new(5, 5).is_empty());
    }
}
