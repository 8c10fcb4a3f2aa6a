//! The monitoring files in `deploy/`: `promtool check rules` and `promtool
//! test rules` on the alert rules (Debian's `prometheus` package, which the
//! README's test command installs; without it the test fails and says
//! so), and every metric the alerts and the Grafana dashboard name is one a
//! node exports, with the labels they group by.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestNode;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}): install the prometheus package (apt-get install prometheus; the README's test command does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let dir = deploy().join("prometheus");
    let checked = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Metric names and the label names of their samples, from a scrape.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                out.entry(name.to_owned()).or_default();
            }
        } else if !line.starts_with('#')
            && let Some((name, labels)) = line.split_once('{')
        {
            let labels = labels.split('}').next().unwrap_or_default();
            let set = out.entry(name.to_owned()).or_default();
            for pair in labels.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    set.insert(k.trim().to_owned());
                }
            }
        }
    }
    out
}

/// The `sfu_*` metric names in a PromQL expression.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("sfu_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The labels of every `by (...)` clause of an expression.
fn grouped_by(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split("by (").skip(1) {
        if let Some(list) = part.split(')').next() {
            out.extend(list.split(',').map(|l| l.trim().to_owned()));
        }
    }
    out
}

#[test]
fn the_alerts_and_the_dashboard_name_metrics_the_node_exports() {
    let node = TestNode::start(2);
    // Some traffic on the API, so that request and auth series exist.
    node.create_room("obs");
    let _ = node.request_as(None, "GET", "/v1/load", "");
    let scrape = node.get("/metrics");
    assert_eq!(scrape.status, 200);
    let metrics = exported(&scrape.text);

    let mut exprs: Vec<(String, String)> = Vec::new();
    let alerts =
        std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).expect("alerts.yml");
    let mut in_expr = false;
    let mut current = String::new();
    for line in alerts.lines() {
        let t = line.trim();
        if let Some(e) = t.strip_prefix("expr:") {
            in_expr = e.trim() == "|";
            current = e.trim().trim_start_matches('|').to_owned();
            if !in_expr {
                exprs.push(("alerts.yml".into(), current.clone()));
            }
        } else if in_expr {
            if t.contains(':') && !t.contains('(') {
                in_expr = false;
                exprs.push(("alerts.yml".into(), current.clone()));
            } else {
                current.push(' ');
                current.push_str(t);
            }
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/sfu.json")).expect("sfu.json"),
    )
    .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expr").to_owned();
            exprs.push((format!("sfu.json {}", panel["title"]), expr));
        }
    }
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    let mut checked = BTreeSet::new();
    for (origin, expr) in &exprs {
        let used = names(expr);
        for name in &used {
            assert!(
                metrics.contains_key(name),
                "{origin}: {name} is not exported (expr {expr})"
            );
            checked.insert(name.clone());
        }
        // A label grouped by is one of the named metrics' labels (when the
        // scrape has samples of it).
        for label in grouped_by(expr) {
            let known = used.iter().any(|n| {
                metrics
                    .get(n)
                    .is_some_and(|labels| labels.is_empty() || labels.contains(&label))
            });
            assert!(
                known || label == "instance",
                "{origin}: no metric of {expr} has the label {label}"
            );
        }
    }
    println!(
        "OBSERVABILITY {} expressions name {} metrics, all exported",
        exprs.len(),
        checked.len()
    );
}
