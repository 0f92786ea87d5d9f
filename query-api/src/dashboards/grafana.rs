//! Grafana dashboard JSON (schemaVersion 41) generated from callscope's dashboard
//! definitions, and the data sources it uses:
//!
//! | callscope data source | Grafana data source (uid) | panel targets |
//! | --- | --- | --- |
//! | `prometheus` | Prometheus, `callscope-prometheus` | `{expr, legendFormat}` |
//! | `sql`, `alerts`, `services`, `pipeline` | JSON (`simpod-json-datasource`), `callscope-json` | `{target: "sql" \| "alerts" \| "services" \| "pipeline", payload}` |
//! | `jaeger` | Jaeger, `callscope-jaeger` | `queryType: "search"` or `"dependencyGraph"` |
//!
//! Visualisations map onto Grafana panel types (`timeseries`, `stat`, `gauge`, `table`,
//! `barchart`, `nodeGraph` for the service map, `table` for trace lists, alert and service
//! lists); units, decimals, min/max and thresholds go to `fieldConfig.defaults`; the grid
//! position is Grafana's `gridPos`.

use callscope_schemas::dashboards::{Dashboard, DataSourceKind, VisualizationKind, Widget};
use serde_json::{Value, json};

pub const PROMETHEUS_UID: &str = "callscope-prometheus";
pub const JSON_UID: &str = "callscope-json";
pub const JAEGER_UID: &str = "callscope-jaeger";
pub const JSON_PLUGIN: &str = "simpod-json-datasource";
/// The schema version of the generated dashboards (Grafana 12).
pub const SCHEMA_VERSION: u32 = 41;

/// The Grafana data sources the dashboards use, pointing at the query API at `base`
/// (what `POST /api/datasources` takes).
pub fn datasources(base: &str) -> Vec<Value> {
    let base = base.trim_end_matches('/');
    vec![
        json!({"name": "callscope (Prometheus)", "uid": PROMETHEUS_UID, "type": "prometheus", "access": "proxy",
               "url": base, "jsonData": {"httpMethod": "POST", "prometheusType": "Prometheus", "timeInterval": "10s"}}),
        json!({"name": "callscope (JSON)", "uid": JSON_UID, "type": JSON_PLUGIN, "access": "proxy",
               "url": format!("{base}/grafana/json"), "jsonData": {}}),
        json!({"name": "callscope (Jaeger)", "uid": JAEGER_UID, "type": "jaeger", "access": "proxy",
               "url": format!("{base}/jaeger"), "jsonData": {}}),
    ]
}

fn source_kind(d: &Dashboard, w: &Widget) -> DataSourceKind {
    d.datasources.iter().find(|s| s.id == w.datasource).map_or(DataSourceKind::Prometheus, |s| s.kind)
}

fn grafana_source(kind: DataSourceKind) -> Value {
    match kind {
        DataSourceKind::Prometheus => json!({"type": "prometheus", "uid": PROMETHEUS_UID}),
        DataSourceKind::Sql | DataSourceKind::Alerts | DataSourceKind::Services | DataSourceKind::Pipeline => {
            json!({"type": JSON_PLUGIN, "uid": JSON_UID})
        }
        DataSourceKind::Jaeger => json!({"type": "jaeger", "uid": JAEGER_UID}),
    }
}

fn panel_type(kind: VisualizationKind) -> &'static str {
    match kind {
        VisualizationKind::Timeseries => "timeseries",
        VisualizationKind::Stat => "stat",
        VisualizationKind::Gauge => "gauge",
        VisualizationKind::Barchart => "barchart",
        VisualizationKind::ServiceMap => "nodeGraph",
        VisualizationKind::Table
        | VisualizationKind::Traces
        | VisualizationKind::AlertList
        | VisualizationKind::ServiceList => "table",
    }
}

/// A Jaeger search target from a trace search (`service=…&errors=true&min_duration=…`).
fn jaeger_target(ref_id: &str, search: &str) -> Value {
    let mut target = json!({"refId": ref_id, "queryType": "search"});
    let mut tags = Vec::new();
    for (k, v) in url::form_urlencoded::parse(search.as_bytes()) {
        match k.as_ref() {
            "service" => target["service"] = json!(v),
            "operation" => target["operation"] = json!(v),
            "min_duration" => target["minDuration"] = json!(v),
            "max_duration" => target["maxDuration"] = json!(v),
            "limit" => target["limit"] = v.parse::<u64>().map_or(json!(20), |n| json!(n)),
            "errors" if v == "true" => tags.push("error=true".to_string()),
            "attr" => tags.push(v.to_string()),
            _ => {}
        }
    }
    if !tags.is_empty() {
        target["tags"] = json!(tags.join(" "));
    }
    target
}

fn targets(kind: DataSourceKind, w: &Widget) -> Vec<Value> {
    let instant = matches!(w.visualization.kind, VisualizationKind::Stat | VisualizationKind::Gauge);
    match kind {
        DataSourceKind::Prometheus => w
            .queries
            .iter()
            .map(|q| {
                json!({"refId": q.ref_id, "expr": q.expr, "legendFormat": q.legend.clone().unwrap_or_default(),
                       "range": !instant, "instant": instant,
                       "datasource": grafana_source(kind)})
            })
            .collect(),
        DataSourceKind::Sql => w
            .queries
            .iter()
            .map(|q| json!({"refId": q.ref_id, "target": "sql", "payload": {"sql": q.expr}, "datasource": grafana_source(kind)}))
            .collect(),
        DataSourceKind::Alerts => vec![json!({"refId": "A", "target": "alerts", "payload": {}, "datasource": grafana_source(kind)})],
        DataSourceKind::Services => {
            vec![json!({"refId": "A", "target": "services", "payload": {}, "datasource": grafana_source(kind)})]
        }
        DataSourceKind::Pipeline => {
            vec![json!({"refId": "A", "target": "pipeline", "payload": {}, "datasource": grafana_source(kind)})]
        }
        DataSourceKind::Jaeger if w.visualization.kind == VisualizationKind::ServiceMap => {
            vec![json!({"refId": "A", "queryType": "dependencyGraph", "datasource": grafana_source(kind)})]
        }
        DataSourceKind::Jaeger => w
            .queries
            .iter()
            .map(|q| {
                let mut t = jaeger_target(&q.ref_id, &q.expr);
                t["datasource"] = grafana_source(kind);
                t
            })
            .collect(),
    }
}

fn field_config(w: &Widget) -> Value {
    let v = &w.visualization;
    let mut defaults = json!({});
    if let Some(unit) = &v.unit {
        defaults["unit"] = json!(unit);
    }
    if let Some(d) = v.decimals {
        defaults["decimals"] = json!(d);
    }
    if let Some(min) = v.min {
        defaults["min"] = json!(min);
    }
    if let Some(max) = v.max {
        defaults["max"] = json!(max);
    }
    if !v.thresholds.is_empty() {
        // Grafana's first step has no value: it applies below the first threshold too.
        let steps: Vec<Value> = v
            .thresholds
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"color": t.color, "value": if i == 0 { Value::Null } else { json!(t.value) }}))
            .collect();
        defaults["thresholds"] = json!({"mode": "absolute", "steps": steps});
        defaults["color"] = json!({"mode": "thresholds"});
    }
    if v.kind == VisualizationKind::Timeseries {
        defaults["custom"] = json!({
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": if v.stacked { 30 } else { 10 },
            "stacking": {"mode": if v.stacked { "normal" } else { "none" }, "group": "A"},
            "showPoints": "never",
        });
    }
    json!({"defaults": defaults, "overrides": []})
}

fn options(kind: VisualizationKind) -> Value {
    match kind {
        VisualizationKind::Stat => json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}),
        VisualizationKind::Gauge => json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                                           "showThresholdMarkers": true}),
        VisualizationKind::Timeseries => {
            json!({"legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                                                "tooltip": {"mode": "multi", "sort": "desc"}})
        }
        VisualizationKind::Barchart => {
            json!({"orientation": "auto", "showValue": "auto", "legend": {"showLegend": true}})
        }
        _ => json!({"showHeader": true}),
    }
}

/// One Grafana panel per widget.
fn panel(d: &Dashboard, index: usize, w: &Widget) -> Value {
    let kind = source_kind(d, w);
    let p = w.position;
    let mut panel = json!({
        "id": index + 1,
        "type": panel_type(w.visualization.kind),
        "title": w.title,
        "description": w.description,
        "gridPos": {"h": p.h, "w": p.w, "x": p.x, "y": p.y},
        "datasource": grafana_source(kind),
        "targets": targets(kind, w),
        "fieldConfig": field_config(w),
        "options": options(w.visualization.kind),
    });
    if w.visualization.kind == VisualizationKind::Stat && kind == DataSourceKind::Sql {
        panel["options"]["reduceOptions"]["fields"] = json!("/.*/");
    }
    panel
}

/// The Grafana dashboard of `d` (what `POST /api/dashboards/db` takes as `dashboard`).
pub fn dashboard(d: &Dashboard) -> Value {
    let mut variables: Vec<Value> = d
        .variables
        .iter()
        .map(|v| {
            let query = match &v.metric {
                Some(m) => format!("label_values({m}, {})", v.label),
                None => format!("label_values({})", v.label),
            };
            json!({
                "name": v.name, "label": v.name, "type": "query",
                "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
                "definition": query, "refresh": 2, "includeAll": v.include_all, "allValue": ".*", "multi": true,
                "current": {"text": "All", "value": "$__all"}, "sort": 1,
            })
        })
        .collect();
    if d.datasources.iter().any(|s| s.kind == DataSourceKind::Prometheus) {
        variables.push(
            json!({"name": "Filters", "type": "adhoc", "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID}}),
        );
    }
    json!({
        "uid": d.id,
        "title": d.title,
        "description": d.description,
        "tags": d.tags.iter().cloned().chain(["callscope".to_string()]).collect::<Vec<_>>(),
        "timezone": "browser",
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": d.version,
        "time": {"from": d.time.from, "to": d.time.to},
        "refresh": d.refresh.clone().unwrap_or_default(),
        "templating": {"list": variables},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": true, "hide": true, "name": "Annotations & Alerts", "type": "dashboard"}]},
        "panels": d.widgets.iter().enumerate().map(|(i, w)| panel(d, i, w)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use callscope_schemas::dashboards::builtin::builtin_dashboards;

    #[test]
    fn every_builtin_dashboard_becomes_a_grafana_dashboard() {
        for d in builtin_dashboards().expect("builtins") {
            let g = dashboard(&d);
            assert_eq!(g["uid"], d.id.as_str());
            assert!(g["uid"].as_str().is_some_and(|u| u.len() <= 40));
            assert_eq!(g["schemaVersion"], 41);
            let panels = g["panels"].as_array().expect("panels");
            assert_eq!(panels.len(), d.widgets.len());
            for p in panels {
                let grid = &p["gridPos"];
                assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{p}");
                let uid = p["datasource"]["uid"].as_str().expect("a data source");
                assert!([PROMETHEUS_UID, JSON_UID, JAEGER_UID].contains(&uid));
                for t in p["targets"].as_array().expect("targets") {
                    assert!(t["refId"].as_str().is_some_and(|r| !r.is_empty()), "{t}");
                }
            }
        }
        let tracing = builtin_dashboards().expect("builtins").into_iter().find(|d| d.id == "tracing").expect("tracing");
        let g = dashboard(&tracing);
        let map =
            g["panels"].as_array().expect("panels").iter().find(|p| p["type"] == "nodeGraph").expect("a node graph");
        assert_eq!(map["targets"][0]["queryType"], "dependencyGraph");
        let errors = g["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .find(|p| p["title"] == "Traces with errors")
            .expect("errors");
        assert_eq!(errors["targets"][0]["tags"], "error=true");
    }
}
