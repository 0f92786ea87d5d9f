//! The part of Prometheus' alert templating that rule files use in `annotations` and
//! `labels`: `{{ $labels.name }}`, `{{ $value }}`, pipes to `humanize`,
//! `humanizePercentage` and `humanizeDuration`, and `printf "%.Nf"` of the value.
//! Anything else is refused when the rule loads.

use std::collections::BTreeMap;

/// A template that cannot be rendered (refused when its rule loads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// Renders `template` for an alert instance.
pub fn render(template: &str, labels: &BTreeMap<String, String>, value: f64) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| TemplateError(format!("unclosed `{{{{` in {template:?}")))?;
        let action = after[..close].trim().trim_start_matches('-').trim_end_matches('-').trim();
        out.push_str(&action_text(action, labels, value)?);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn action_text(action: &str, labels: &BTreeMap<String, String>, value: f64) -> Result<String, TemplateError> {
    let mut stages = action.split('|').map(str::trim);
    let first = stages.next().unwrap_or_default();
    let mut text = if let Some(name) = first.strip_prefix("$labels.") {
        Text::Str(labels.get(name).cloned().unwrap_or_default())
    } else if first == "$value" {
        Text::Num(value)
    } else if let Some(args) = first.strip_prefix("printf ") {
        let (format, arg) = args
            .trim()
            .rsplit_once(' ')
            .ok_or_else(|| TemplateError(format!("printf needs a format and $value: {first:?}")))?;
        if arg != "$value" {
            return Err(TemplateError(format!("printf only formats $value: {first:?}")));
        }
        Text::Str(printf(format.trim().trim_matches('"'), value)?)
    } else {
        return Err(TemplateError(format!(
            "unsupported template action {{{{ {action} }}}}; use $labels.x, $value, printf, humanize"
        )));
    };
    for stage in stages {
        let Text::Num(v) = text else {
            return Err(TemplateError(format!("`{stage}` needs a number in {{{{ {action} }}}}")));
        };
        text = Text::Str(match stage {
            "humanize" => humanize(v),
            "humanizePercentage" => format!("{}%", trim_float(v * 100.0, 4)),
            "humanizeDuration" => humantime_secs(v),
            other => return Err(TemplateError(format!("unsupported template function `{other}`"))),
        });
    }
    Ok(match text {
        Text::Str(s) => s,
        Text::Num(v) => format_value(v),
    })
}

enum Text {
    Str(String),
    Num(f64),
}

/// `$value` as Go's `%v` prints a float64.
pub use callscope_schemas::text_formats::go_float as format_value;

fn trim_float(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn printf(format: &str, value: f64) -> Result<String, TemplateError> {
    let spec =
        format.strip_prefix('%').ok_or_else(|| TemplateError(format!("printf format {format:?} must start with %")))?;
    match spec {
        "v" | "g" => Ok(format_value(value)),
        "d" => Ok(format!("{}", value.round() as i64)),
        s if s.starts_with('.') && s.ends_with('f') => {
            let digits: usize =
                s[1..s.len() - 1].parse().map_err(|_| TemplateError(format!("bad printf precision in {format:?}")))?;
            Ok(format!("{value:.digits$}"))
        }
        _ => Err(TemplateError(format!("printf format {format:?} is not supported; use %v, %d or %.Nf"))),
    }
}

fn humanize(v: f64) -> String {
    let a = v.abs();
    let (div, suffix) = match a {
        a if a >= 1e12 => (1e12, "T"),
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    format!("{}{suffix}", trim_float(v / div, 4))
}

fn humantime_secs(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return format_value(v);
    }
    if v < 60.0 {
        return format!("{}s", trim_float(v, 3));
    }
    let total = v.round() as u64;
    let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit} "));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_values_and_functions() {
        let labels = BTreeMap::from([("service".to_string(), "call-gateway".to_string())]);
        let t = "Failure rate {{ $value | humanizePercentage }} on {{ $labels.service }} ({{ printf \"%.2f\" $value }}, {{$value}})";
        assert_eq!(render(t, &labels, 0.0712).expect("renders"), "Failure rate 7.12% on call-gateway (0.07, 0.0712)");
        assert_eq!(render("{{ $value | humanize }}", &labels, 15300.0).expect("renders"), "15.3k");
        assert_eq!(render("{{ $value | humanizeDuration }}", &labels, 3725.0).expect("renders"), "1h 2m 5s");
        assert_eq!(render("{{ $labels.missing }}!", &labels, 1.0).expect("renders"), "!");
    }

    #[test]
    fn unsupported_actions_are_named() {
        let l = BTreeMap::new();
        assert!(render("{{ range $x }}", &l, 1.0).expect_err("refused").to_string().contains("range $x"));
        assert!(render("{{ $value | title }}", &l, 1.0).expect_err("refused").to_string().contains("title"));
        assert!(render("{{ $value", &l, 1.0).expect_err("refused").to_string().contains("unclosed"));
    }
}
