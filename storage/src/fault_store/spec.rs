//! The text form of fault rules: the `fault_spec` tier option, for soak runs.
//!
//! ```text
//! spec  = rule { ";" rule }
//! rule  = op ":" path ":" fault { ":" arg }
//! op    = put | put_multipart | get | head | get_ranges | list | list_with_delimiter
//!       | delete | copy | rename | *
//! path  = *            any key
//!       | ^prefix      keys starting with prefix
//!       | text         keys containing text           (no ':' ';' or ',' in either)
//! fault = error        transient error (object_store::Error::Generic; callers retry)
//!       | not_implemented | precondition | not_found
//!       | latency      adds a delay; needs a duration argument
//! arg   = 0.05 | 5%    for error faults: the fraction of matching calls that fail
//!       | 20ms         for latency: the delay (us, ms or s; 1.5s works)
//!       | once | times=N     fire at most N times (default: every time)
//!       | skip=N             let the first N matching calls through
//!       | rate=R | seed=S    fire on a seeded fraction R of matching calls (any fault)
//!       | stage=before|after before the call (default), or after it succeeded
//! ```
//!
//! For example `put:_catalog/commits/:error:0.05;get:*:latency:20ms` fails 5% of commit
//! record writes and delays every read by 20 ms; `put:^metrics/:error:skip=1:once` fails
//! only the second data file write. Keys are relative to the tier. A rate without a seed
//! uses a fixed one, so a run is repeatable. Pauses need a test's handle and have no text
//! form. `,` is kept out of the syntax because `CALLSCOPE_STORAGE_OPTIONS` splits on it.

use std::time::Duration;

use super::{Fault, FaultRule, InjectedError, PathMatch, Stage};
use crate::instrumented_store::StoreOp;

/// A `fault_spec` that cannot be parsed: the rule and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault rule {rule:?}: {reason}")]
pub struct FaultSpecError {
    pub rule: String,
    pub reason: String,
}

/// Parses a spec into rules (an empty spec has none).
pub fn parse_fault_spec(spec: &str) -> Result<Vec<FaultRule>, FaultSpecError> {
    spec.split(';')
        .map(str::trim)
        .filter(|rule| !rule.is_empty())
        .map(|rule| parse_rule(rule).map_err(|reason| FaultSpecError { rule: rule.to_string(), reason }))
        .collect()
}

fn parse_rule(text: &str) -> Result<FaultRule, String> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    let [op, path, fault, args @ ..] = parts.as_slice() else {
        return Err("expected <op>:<path>:<fault>[:<arg>...]".into());
    };
    let op = match *op {
        "*" => None,
        name => Some(StoreOp::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = StoreOp::ALL.iter().map(|op| op.name()).collect();
            format!("unknown operation {name:?} (expected one of {}, or *)", names.join(", "))
        })?),
    };
    let path = match *path {
        "" => return Err("empty path (use * for any key)".into()),
        "*" => PathMatch::Any,
        p => match p.strip_prefix('^') {
            Some("") => return Err("empty prefix after ^".into()),
            Some(prefix) => PathMatch::prefix(prefix),
            None => PathMatch::contains(p),
        },
    };
    let error = match *fault {
        "error" => Some(InjectedError::Transient),
        "not_implemented" => Some(InjectedError::NotImplemented),
        "not_found" => Some(InjectedError::NotFound),
        "precondition" => Some(InjectedError::Precondition),
        "latency" => None,
        "pause" => return Err("a pause needs a test's handle (FaultControl::pause); it has no spec form".into()),
        other => {
            return Err(format!(
                "unknown fault {other:?} (expected error, not_implemented, precondition, not_found or latency)"
            ));
        }
    };
    let (mut delay, mut rate, mut seed) = (None, None, None);
    let (mut times, mut skip, mut stage) = (None, 0, Stage::Before);
    for arg in args.iter().copied() {
        match arg.split_once('=') {
            Some(("times", n)) => times = Some(parse_count(n)?),
            Some(("skip", n)) => skip = parse_count(n)?,
            Some(("rate", r)) => rate = Some(parse_rate(r)?),
            Some(("seed", s)) => seed = Some(parse_count(s)?),
            Some(("stage", "before")) => stage = Stage::Before,
            Some(("stage", "after")) => stage = Stage::After,
            Some(("stage", s)) => return Err(format!("stage must be before or after, not {s:?}")),
            Some((key, _)) => return Err(format!("unknown argument {key:?} (times, skip, rate, seed or stage)")),
            None if arg == "once" => times = Some(1),
            None if error.is_none() && delay.is_none() => delay = Some(parse_duration(arg)?),
            None if error.is_some() && rate.is_none() => rate = Some(parse_rate(arg)?),
            None => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let fault = match (error, delay) {
        (Some(error), _) => Fault::Error(error),
        (None, Some(delay)) => Fault::Latency(delay),
        (None, None) => return Err("latency needs a duration, e.g. latency:20ms".into()),
    };
    let mut rule = FaultRule::new(op, path, fault).skip(skip).stage(stage);
    if let Some(n) = times {
        rule = rule.times(n);
    }
    match (rate, seed) {
        (Some(rate), seed) => rule = rule.rate(rate, seed.unwrap_or(super::DEFAULT_SEED)),
        (None, Some(_)) => return Err("seed without a rate".into()),
        (None, None) => {}
    }
    Ok(rule)
}

fn parse_count(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{text:?} is not a whole number"))
}

/// `0.05` or `5%`, in (0, 1].
fn parse_rate(text: &str) -> Result<f64, String> {
    let bad = || format!("bad rate {text:?} (a fraction in (0, 1] like 0.05, or a percentage like 5%)");
    let rate = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map_err(|_| bad())? / 100.0,
        None => text.parse::<f64>().map_err(|_| bad())?,
    };
    if rate > 0.0 && rate <= 1.0 { Ok(rate) } else { Err(bad()) }
}

/// `500us`, `20ms`, `1.5s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?} (e.g. 20ms, 1.5s, 500us)");
    let split = text.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let nanos_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(bad()),
    };
    let nanos = number.parse::<f64>().map_err(|_| bad())? * nanos_per_unit;
    if !(nanos >= 0.0 && nanos < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}
