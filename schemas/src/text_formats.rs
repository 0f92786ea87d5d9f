//! How callscope writes numbers and times for its peers: floats as Go's `%v` (what the
//! Prometheus text format and alert templates expect) and timestamps as RFC 3339.

/// A float as Go's `%v` prints it: shortest round-trip form, `NaN`, `+Inf`, `-Inf`.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds; `None` outside chrono's range.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_times() {
        assert_eq!(
            (go_float(0.5), go_float(f64::INFINITY), go_float(f64::NAN)),
            ("0.5".into(), "+Inf".into(), "NaN".into())
        );
        assert_eq!(rfc3339_ms(1_700_000_000_000).as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(rfc3339_ms(i64::MAX), None);
    }
}
