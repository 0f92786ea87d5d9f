//! The one parser of times and durations in query parameters, used by every route.
//!
//! **Times** (`start`, `end`, `from`, `to`, `startsAt`, …) are accepted as:
//!
//! * a number: below 10^11 it is **seconds** since the epoch (`1700000000`,
//!   `1700000000.5`, as Prometheus sends), from 10^11 on it is **milliseconds**
//!   (`1700000000000`, as Grafana's JSON datasource sends). 10^11 seconds is the year 5138
//!   and 10^11 milliseconds is March 1973, so no time this system stores is ambiguous;
//! * RFC 3339 (`2026-12-01T10:00:00Z`, `2026-12-01T18:00:00+08:00`);
//! * `now`, or `now` plus or minus a duration (`now-1h`, `now-30m`, `now+5m`), as Grafana
//!   writes relative ranges.
//!
//! Every time must lie in the years 1 to 9999: anything else is refused with a 400 that names
//! the parameter, so no arithmetic on a parsed time can overflow.
//!
//! **Durations** (`step`, `window`, `resolution`) are a plain integer of milliseconds
//! (`250`) or a duration with units (`500ms`, `15s`, `1m`, `1h30m`, `7d`), between 1 ms
//! and 100 years.

use crate::error::{ApiError, ApiResult};

/// 0001-01-01T00:00:00Z in unix milliseconds.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z in unix milliseconds.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// The longest duration accepted: 100 years of 365.25 days.
pub const MAX_DURATION_MS: i64 = 3_155_760_000_000;
/// Numbers below this are seconds, numbers at or above it milliseconds.
const SECONDS_BELOW: f64 = 1e11;

/// Parses the time parameter `field`; `now_ms` anchors `now-…`.
pub fn parse_time(field: &str, text: &str, now_ms: i64) -> ApiResult<i64> {
    let t = text.trim();
    let ms = if let Some(rest) = t.strip_prefix("now") {
        relative(field, text, rest.trim(), now_ms)?
    } else if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') && !looks_like_date(t) {
        number(field, text, t)?
    } else {
        chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()).map_err(|_| {
            ApiError::bad_field(
                field,
                format!("{field}={text:?} is not a time: use unix seconds or milliseconds, RFC 3339, or now-1h"),
            )
        })?
    };
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(ApiError::bad_field(field, format!("{field}={text:?} is outside the years 1 to 9999")));
    }
    Ok(ms)
}

/// `2026-12-01…` starts with a digit but is a date.
fn looks_like_date(t: &str) -> bool {
    t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') && t.as_bytes().get(7) == Some(&b'-')
}

fn number(field: &str, text: &str, t: &str) -> ApiResult<i64> {
    let bad = || ApiError::bad_field(field, format!("{field}={text:?} is not a number of seconds or milliseconds"));
    let out_of_range = || ApiError::bad_field(field, format!("{field}={text:?} is outside the years 1 to 9999"));
    if let Ok(n) = t.parse::<i64>() {
        return if (n as f64).abs() < SECONDS_BELOW { n.checked_mul(1000).ok_or_else(out_of_range) } else { Ok(n) };
    }
    let v: f64 = t.parse().map_err(|_| bad())?;
    if !v.is_finite() {
        return Err(bad());
    }
    let ms = if v.abs() < SECONDS_BELOW { v * 1000.0 } else { v };
    if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
        return Err(out_of_range());
    }
    Ok(ms.round() as i64)
}

fn relative(field: &str, text: &str, rest: &str, now_ms: i64) -> ApiResult<i64> {
    if rest.is_empty() {
        return Ok(now_ms);
    }
    let (sign, d) = match rest.split_at(1) {
        ("-", d) => (-1, d),
        ("+", d) => (1, d),
        _ => {
            return Err(ApiError::bad_field(
                field,
                format!("{field}={text:?}: write now, now-<duration> or now+<duration>"),
            ));
        }
    };
    let d = parse_duration(field, d.trim())?;
    // Both terms are bounded (a wall clock and at most 100 years), so this cannot overflow.
    Ok(now_ms + sign * d)
}

/// Parses the duration parameter `field`: integer milliseconds or a duration with units.
pub fn parse_duration(field: &str, text: &str) -> ApiResult<i64> {
    let t = text.trim();
    let ms = match t.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => {
            let d = humantime::parse_duration(t).map_err(|e| {
                ApiError::bad_field(
                    field,
                    format!("{field}={text:?}: {e}; use milliseconds or a duration such as 15s, 1m, 1h"),
                )
            })?;
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        }
    };
    if ms < 1 {
        return Err(ApiError::bad_field(field, format!("{field}={text:?}: must be at least 1ms")));
    }
    if ms > MAX_DURATION_MS {
        return Err(ApiError::bad_field(field, format!("{field}={text:?}: must be at most 100 years")));
    }
    Ok(ms)
}

/// Parses a span duration `field` into microseconds: Go's duration syntax as Jaeger takes
/// it (`1.2ms`, `250us`, `250µs`, `2s`, `1m30s`, `1h`, `900ns`), or a plain number of
/// milliseconds like every other duration here; between 0 and 100 years.
pub fn parse_duration_us(field: &str, text: &str) -> ApiResult<i64> {
    let bad = |why: &str| {
        ApiError::bad_field(field, format!("{field}={text:?}: {why}; use a duration such as 1.2ms, 250us, 2s or 1m30s"))
    };
    let t = text.trim();
    if let Ok(ms) = t.parse::<f64>() {
        if !(0.0..=MAX_DURATION_MS as f64).contains(&ms) {
            return Err(bad("out of range"));
        }
        return Ok((ms * 1000.0).round() as i64);
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().map_err(|_| bad("expected a number"))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let micros = match &rest[..unit_len] {
            "ns" => 0.001,
            "us" | "µs" | "μs" => 1.0,
            "ms" => 1000.0,
            "s" => 1e6,
            "m" => 60e6,
            "h" => 3600e6,
            "" => return Err(bad("a unit is missing")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += value * micros;
    }
    if total > MAX_DURATION_MS as f64 * 1000.0 {
        return Err(bad("out of range"));
    }
    Ok(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_durations_read_as_jaeger_writes_them() {
        assert_eq!(parse_duration_us("d", "1.2ms").expect("ms"), 1200);
        assert_eq!(parse_duration_us("d", "250us").expect("us"), 250);
        assert_eq!(parse_duration_us("d", "250µs").expect("µs"), 250);
        assert_eq!(parse_duration_us("d", "1m30s").expect("m s"), 90_000_000);
        assert_eq!(parse_duration_us("d", "15").expect("plain ms"), 15_000);
        for bad in ["", "ms", "5 parsecs", "-1s", "1e300"] {
            assert!(parse_duration_us("d", bad).is_err(), "{bad}");
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn seconds_milliseconds_and_rfc3339_mean_the_same_instant() {
        for text in ["1700000000", "1700000000.0", "1700000000000", "2023-11-14T22:13:20Z", "2023-11-15T06:13:20+08:00"]
        {
            assert_eq!(parse_time("start", text, NOW).expect(text), 1_700_000_000_000, "{text}");
        }
        assert_eq!(parse_time("start", "1700000000.5", NOW).expect("fraction"), 1_700_000_000_500);
        assert_eq!(parse_time("start", " 0 ", NOW).expect("epoch"), 0);
        assert_eq!(parse_time("start", "-1", NOW).expect("before the epoch"), -1000);
    }

    #[test]
    fn relative_times_are_anchored_at_now() {
        assert_eq!(parse_time("end", "now", NOW).expect("now"), NOW);
        assert_eq!(parse_time("start", "now-1h", NOW).expect("now-1h"), NOW - 3_600_000);
        assert_eq!(parse_time("start", "now - 30m", NOW).expect("spaces"), NOW - 1_800_000);
        assert_eq!(parse_time("end", "now+5m", NOW).expect("now+5m"), NOW + 300_000);
        assert!(parse_time("start", "now*2", NOW).is_err());
        assert!(parse_time("start", "now-", NOW).is_err());
    }

    #[test]
    fn out_of_range_and_garbage_are_refused_with_the_field_name() {
        for text in [
            "-9223372036854775808",
            "9223372036854775807",
            "1e300",
            "NaN",
            "inf",
            "-inf",
            "",
            "yesterday",
            "10000-01-01T00:00:00Z",
            "now-1000000000y",
            "+",
        ] {
            match parse_time("end", text, NOW) {
                Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("end"), "{text}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn durations_have_bounds() {
        assert_eq!(parse_duration("step", "250").expect("ms"), 250);
        assert_eq!(parse_duration("step", "15s").expect("15s"), 15_000);
        assert_eq!(parse_duration("step", "1h30m").expect("1h30m"), 5_400_000);
        assert_eq!(parse_duration("step", "7d").expect("7d"), 7 * 86_400_000);
        for text in ["0", "-5", "0s", "soon", "", "101y", "99999999999999999999"] {
            assert!(parse_duration("step", text).is_err(), "{text}");
        }
    }
}
