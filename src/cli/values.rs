//! Value parsers of flags (the one place where errors are strings: clap wants them so).

use callscope_schemas::Dataset;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// `key=value`, both sides trimmed.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// `tier:key=value` (an object-store option of one tier).
pub fn parse_tier_option(s: &str) -> Result<(callscope_storage::TierName, String, String), String> {
    let (tier, option) = s.split_once(':').ok_or_else(|| format!("expected tier:key=value, got {s:?}"))?;
    let tier = tier.trim().parse()?;
    let (k, v) = parse_key_value(option)?;
    Ok((tier, k, v))
}

/// A dataset by name (`metrics`, `spans`, `alerts`), listed in the help.
pub fn dataset() -> impl TypedValueParser<Value = Dataset> {
    PossibleValuesParser::new(Dataset::ALL.map(Dataset::name))
        .try_map(|name| Dataset::from_name(&name).ok_or_else(|| format!("unknown dataset {name}")))
}
