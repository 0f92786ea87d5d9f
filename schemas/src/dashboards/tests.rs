use super::builtin::{builtin_dashboards, merge_with_builtin_dashboards};
use super::*;

fn no_sql(_: &str) -> Result<(), String> {
    Ok(())
}

fn small() -> serde_json::Value {
    serde_json::json!({
        "id": "calls",
        "title": "Calls",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "access": {"owner": "li", "viewers": ["ok"], "editors": ["editor"]},
        "datasources": [{"id": "m", "kind": "prometheus"}, {"id": "s", "kind": "sql"}],
        "variables": [{"name": "region", "label": "region", "metric": "calls_total"}],
        "widgets": [
            {"id": "rate", "title": "Calls per second", "datasource": "m",
             "queries": [{"ref_id": "A", "expr": "sum(rate(calls_total{region=~\"$region\"}[5m]))"}],
             "visualization": {"kind": "timeseries", "unit": "reqps",
                               "thresholds": [{"value": 0, "color": "green"}, {"value": 100, "color": "#ff0000"}]},
             "position": {"x": 0, "y": 0, "w": 12, "h": 8}},
            {"id": "table", "title": "By region", "datasource": "s",
             "queries": [{"ref_id": "A", "expr": "SELECT 1"}],
             "visualization": {"kind": "table"}, "position": {"x": 12, "y": 0, "w": 12, "h": 8}}
        ]
    })
}

fn dashboard(v: serde_json::Value) -> Dashboard {
    serde_json::from_value(v).expect("parses")
}

fn field_of(v: serde_json::Value) -> String {
    dashboard(v).validate(&no_sql).expect_err("invalid").field
}

#[test]
fn a_valid_dashboard_passes_and_each_mistake_names_its_field() {
    dashboard(small()).validate(&no_sql).expect("valid");
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/id", "no spaces".into(), "id"),
        ("/title", "".into(), "title"),
        ("/time/from", "yesterday".into(), "time.from"),
        ("/refresh", "often".into(), "refresh"),
        ("/widgets/0/datasource", "nope".into(), "widgets[0].datasource"),
        ("/widgets/0/queries/0/expr", "sum(".into(), "widgets[0].queries[0].expr"),
        ("/widgets/0/queries/0/expr", "holt_winters(x[5m], 0.5, 0.5)".into(), "widgets[0].queries[0].expr"),
        ("/widgets/0/position/w", 25.into(), "widgets[0].position"),
        ("/widgets/0/position/h", 0.into(), "widgets[0].position"),
        ("/widgets/0/visualization/kind", "service_map".into(), "widgets[0].visualization.kind"),
        ("/widgets/0/visualization/thresholds/1/value", (-1).into(), "widgets[0].visualization.thresholds[1].value"),
        (
            "/widgets/0/visualization/thresholds/1/color",
            "blurple".into(),
            "widgets[0].visualization.thresholds[1].color",
        ),
        ("/widgets/1/id", "rate".into(), "widgets[1].id"),
        ("/widgets/1/queries/0/ref_id", "".into(), "widgets[1].queries[0].ref_id"),
        ("/variables/0/label", "a b".into(), "variables[0].label"),
        ("/datasources/1/id", "m".into(), "datasources[1].id"),
        ("/access/viewers", serde_json::json!(["ok", "not ok"]), "access.viewers[1]"),
    ];
    for (pointer, value, field) in cases {
        let mut v = small();
        *v.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value.clone();
        let got = dashboard(v).validate(&no_sql).err().map(|e| e.field);
        assert_eq!(got.as_deref(), Some(field), "{pointer} = {value}");
    }
    let mut v = small();
    v["widgets"] = serde_json::json!([]);
    assert_eq!(field_of(v), "widgets");
    // SQL is checked by the caller's parser, with the range macros filled in.
    let refuse = |sql: &str| if sql.contains("SELEC ") { Err("syntax".to_string()) } else { Ok(()) };
    let mut v = small();
    v["widgets"][1]["queries"][0]["expr"] = "SELEC 1 WHERE t > $__from".into();
    assert_eq!(dashboard(v).validate(&refuse).expect_err("bad sql").field, "widgets[1].queries[0].expr");
    // Unknown fields are refused when parsing.
    let mut v = small();
    v["colour"] = "blue".into();
    assert!(serde_json::from_value::<Dashboard>(v).is_err());
}

#[test]
fn access_follows_owner_admin_and_roles() {
    let access = Access { owner: "li".into(), viewers: vec!["executive".into()], editors: vec!["operator".into()] };
    let caller =
        |user: &str, roles: &[&str]| Caller { user: user.into(), roles: roles.iter().map(|r| r.to_string()).collect() };
    assert!(access.can_view(&caller("wang", &["executive"])) && !access.can_edit(&caller("wang", &["executive"])));
    assert!(access.can_view(&caller("zhao", &["operator"])) && access.can_edit(&caller("zhao", &["operator"])));
    assert!(!access.can_view(&caller("zhao", &["viewer"])));
    assert!(access.can_edit(&caller("li", &[])), "the owner");
    assert!(!access.role_may_edit(&caller("li", &[])), "but owning grants no role");
    assert!(access.role_may_edit(&caller("x", &["operator"])) && access.role_may_edit(&caller("x", &[ADMIN_ROLE])));
    assert!(access.can_edit(&caller("x", &[ADMIN_ROLE])), "admin");
    let open = Access::default();
    assert!(open.can_view(&caller("", &[])) && !open.can_edit(&caller("", &["viewer"])));
}

#[test]
fn the_eight_builtin_dashboards_are_valid() {
    let all = builtin_dashboards().expect("the built-in dashboards parse");
    assert_eq!(all.len(), 8);
    for d in &all {
        d.validate(&no_sql).unwrap_or_else(|e| panic!("{}: {}: {}", d.id, e.field, e.message));
        assert!(d.builtin && d.version == 1, "{}", d.id);
        // No two widgets overlap on the grid.
        for (i, a) in d.widgets.iter().enumerate() {
            for b in &d.widgets[i + 1..] {
                let (p, q) = (a.position, b.position);
                let overlap = p.x < q.x + q.w && q.x < p.x + p.w && p.y < q.y + q.h && q.y < p.y + p.h;
                assert!(!overlap, "{}: {} and {} overlap", d.id, a.id, b.id);
            }
        }
    }
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, builtin::BUILTIN_DASHBOARDS.map(|(id, _)| id));
    let mut mine = all[1].clone();
    mine.title = "Ops (ours)".into();
    mine.builtin = true;
    let mut extra = dashboard(small());
    extra.title = "A".into();
    let merged = merge_with_builtin_dashboards(all.clone(), vec![extra, mine]);
    assert_eq!(merged.len(), 9);
    assert_eq!((merged[1].title.as_str(), merged[1].builtin), ("Ops (ours)", false));
    assert_eq!(merged[8].id, "calls");
}

#[test]
fn variables_read_as_all_when_checked() {
    let vars = vec![
        Variable { name: "region".into(), label: "region".into(), metric: None, include_all: true },
        Variable { name: "region_group".into(), label: "g".into(), metric: None, include_all: true },
    ];
    assert_eq!(with_variables_as_all("x{a=~\"$region_group\", b=~\"${region}\"}", &vars), "x{a=~\".*\", b=~\".*\"}");
}
