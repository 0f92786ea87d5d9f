//! The eight predefined dashboards, written as the JSON files the export route gives
//! (`schemas/dashboards/*.json`), over the metrics and spans the phone platform (and the
//! demo traffic) emits. A stored dashboard with the same id replaces one; deleting it
//! brings the built-in back.

use std::collections::BTreeMap;

use super::Dashboard;

/// Id and JSON of every built-in dashboard.
pub const BUILTIN_DASHBOARDS: [(&str, &str); 8] = [
    ("executive-overview", include_str!("../../dashboards/executive-overview.json")),
    ("operations", include_str!("../../dashboards/operations.json")),
    ("ai-performance", include_str!("../../dashboards/ai-performance.json")),
    ("infrastructure", include_str!("../../dashboards/infrastructure.json")),
    ("business", include_str!("../../dashboards/business.json")),
    ("alerts", include_str!("../../dashboards/alerts.json")),
    ("security", include_str!("../../dashboards/security.json")),
    ("tracing", include_str!("../../dashboards/tracing.json")),
];

/// The built-in dashboards, marked `builtin`, version 1 (the files are checked by a test,
/// so a parse error here cannot ship).
pub fn builtin_dashboards() -> Result<Vec<Dashboard>, serde_json::Error> {
    BUILTIN_DASHBOARDS
        .iter()
        .map(|(_, text)| {
            let mut d: Dashboard = serde_json::from_str(text)?;
            d.builtin = true;
            d.version = d.version.max(1);
            Ok(d)
        })
        .collect()
}

/// The built-in dashboards with stored ones (never `builtin`) replacing those of the same
/// id or adding to them, in the built-ins' order and then by title.
pub fn merge_with_builtin_dashboards(builtins: Vec<Dashboard>, stored: Vec<Dashboard>) -> Vec<Dashboard> {
    let mut stored: BTreeMap<String, Dashboard> = stored
        .into_iter()
        .map(|mut d| {
            d.builtin = false;
            (d.id.clone(), d)
        })
        .collect();
    let mut out: Vec<Dashboard> = builtins.into_iter().map(|b| stored.remove(&b.id).unwrap_or(b)).collect();
    let mut rest: Vec<Dashboard> = stored.into_values().collect();
    rest.sort_by(|a, b| a.title.cmp(&b.title).then_with(|| a.id.cmp(&b.id)));
    out.extend(rest);
    out
}
