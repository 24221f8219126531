//! The monitoring mixin the packages ship in `/usr/share/relay-sync/monitoring/` (source:
//! `packaging/monitoring/`), checked against what this crate writes: the Prometheus alerting
//! rules pass `promtool check rules` and their unit tests (`promtool test rules`), every alert
//! has a test that fires it, and the rules and the Grafana dashboard refer only to metrics
//! relay-sync writes ([`crate::metrics`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::metrics::{self, RunMetrics, WatchMetrics};

/// `packaging/monitoring/`.
fn mixin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/monitoring")
}

const RULES: &str = "relay-sync-alerts.yml";
const RULE_TESTS: &str = "relay-sync-alerts.test.yml";
const DASHBOARD: &str = "relay-sync-dashboard.json";

/// Every series name relay-sync writes: the run's file with every optional metric present,
/// and the watcher's, histogram series (`_bucket`, `_sum`, `_count`) included.
fn written_names() -> BTreeSet<String> {
    let text = metrics::render(&sample()) + &metrics::render_watch(&WatchMetrics::default());
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// A run with every optional metric present.
fn sample() -> RunMetrics {
    RunMetrics {
        last_run: 1,
        last_success: 1,
        exit: 0,
        domains: 1,
        added: 0,
        removed: 0,
        duration: 0.1,
        consecutive_failures: 0,
        invalid_rows: 0,
        held: true,
        held_since: 1,
        recipients: Some(1),
    }
}

/// docs/monitoring.md's table of metrics is rendered from the `# HELP` and `# TYPE` lines
/// relay-sync writes; `UPDATE_EXPECT=1` rewrites it instead of failing.
#[test]
fn the_monitoring_documentation_lists_the_metrics() {
    let text = metrics::render(&sample()) + &metrics::render_watch(&WatchMetrics::default());
    let mut table = String::from("| metric | type | meaning |\n|---|---|---|\n");
    let mut help = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let meaning = help.split_once(' ').map_or("", |(_, meaning)| meaning);
            let labels = if name == "relay_sync_build_info" {
                "{version,features}"
            } else {
                ""
            };
            table.push_str(&format!("| `{name}{labels}` | {kind} | {meaning} |\n"));
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin = "<!-- BEGIN metrics: generated from what relay-sync writes -->\n";
    let end = "<!-- END metrics -->";
    let (before, rest) = doc.split_once(begin).expect("the BEGIN marker");
    let (_, after) = rest.split_once(end).expect("the END marker");
    let rendered = format!("{before}{begin}{table}{end}{after}");
    if rendered != doc {
        if std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1") {
            std::fs::write(&path, rendered).unwrap();
        } else {
            panic!(
                "docs/monitoring.md's metrics differ from what relay-sync writes; regenerate \
                 them with `UPDATE_EXPECT=1 cargo test -p relay-ops monitoring::`"
            );
        }
    }
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords, label names (in `{…}`, `by (…)`, `on (…)`, …) or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's `label_values(METRIC, LABEL)`: the metric only.
    let mut text = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find("label_values(") {
        text.push_str(&rest[..at]);
        let args = &rest[at + "label_values(".len()..];
        let end = args.find(')').unwrap_or(args.len());
        text.push_str(args[..end].split(',').next().unwrap_or_default());
        rest = args.get(end + 1..).unwrap_or_default();
    }
    text.push_str(rest);
    // Strings, label matchers, ranges and label lists hold no metric name.
    let mut plain = String::new();
    let mut closing: Option<char> = None;
    for c in text.chars() {
        match closing {
            Some(end) if c == end => closing = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' | '`' => closing = Some(c),
                '{' => closing = Some('}'),
                '[' => closing = Some(']'),
                _ => plain.push(c),
            },
        }
    }
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
    let mut names = BTreeSet::new();
    let mut chars = plain.char_indices().peekable();
    let mut skip_list = false;
    while let Some((start, c)) = chars.next() {
        if c == ')' {
            skip_list = false;
        }
        if c.is_ascii_digit() {
            // A number or a duration (`0.95`, `5m`): no name starts inside it.
            while chars
                .peek()
                .is_some_and(|&(_, next)| next.is_ascii_alphanumeric() || next == '.')
            {
                chars.next();
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(at, next)) = chars.peek() {
            if next.is_ascii_alphanumeric() || next == '_' || next == ':' {
                end = at + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let word = &plain[start..end];
        // A function or aggregation: followed by its arguments or by its grouping clause.
        let after = plain[end..].trim_start();
        let called = after.starts_with('(')
            || ["by", "without"].iter().any(|clause| {
                after
                    .strip_prefix(clause)
                    .is_some_and(|rest| rest.trim_start().starts_with('('))
            });
        if LABEL_LISTS.contains(&word) {
            skip_list = true;
        } else if !skip_list && !called && !KEYWORDS.contains(&word) {
            names.insert(word.to_owned());
        }
    }
    names
}

/// The `expr:` values of the rules file (YAML block scalars or plain values).
fn rule_expressions(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        let indent = at;
        let mut expr = line[at + "expr:".len()..]
            .trim()
            .trim_start_matches('|')
            .to_owned();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_indent <= indent {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr);
    }
    exprs
}

/// Every `expr` (a panel's query) and `definition` (a variable's query) in the dashboard.
fn dashboard_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr" | "definition", serde_json::Value::String(expr)) => {
                        out.push(expr.clone());
                    }
                    _ => dashboard_expressions(field, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_expressions(item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (instance, le) (rate(relay_sync_a_bucket{instance=~\"$x\"}[1h]))) \
         and on (job) relay_sync_b == bool 1 unless time() - relay_sync_c offset 5m",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["relay_sync_a_bucket", "relay_sync_b", "relay_sync_c"]
    );
    assert_eq!(
        metric_names("label_values(relay_sync_x, instance)")
            .into_iter()
            .collect::<Vec<_>>(),
        ["relay_sync_x"]
    );
}

/// The rules and the dashboard read only metrics relay-sync writes, so that a renamed metric
/// cannot leave an alert that never fires or a panel that is always empty.
#[test]
fn rules_and_dashboard_read_only_metrics_relay_sync_writes() {
    let written = written_names();
    assert!(written.contains("relay_sync_build_info"), "{written:?}");
    let rules = std::fs::read_to_string(mixin_dir().join(RULES)).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mixin_dir().join(DASHBOARD)).unwrap())
            .unwrap();
    let mut dashboard_exprs = Vec::new();
    dashboard_expressions(&dashboard, &mut dashboard_exprs);
    let rule_exprs = rule_expressions(&rules);
    assert_eq!(rule_exprs.len(), 6, "{rule_exprs:#?}");
    assert!(dashboard_exprs.len() >= 10, "{dashboard_exprs:#?}");
    for (file, exprs) in [(RULES, &rule_exprs), (DASHBOARD, &dashboard_exprs)] {
        for expr in exprs {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{file}: no metric in {expr:?}");
            for name in names {
                assert!(
                    written.contains(&name),
                    "{file} reads {name}, which relay-sync does not write: {expr}\nwritten: {written:?}"
                );
            }
        }
    }
}

/// `promtool check rules` accepts the rules, `promtool test rules` passes, and every alert has
/// a test case that expects it to fire.
#[test]
fn promtool_checks_and_tests_the_rules() {
    let promtool = relay_testbed::require("/usr/bin/promtool", "prometheus")
        .unwrap_or_else(|error| panic!("{error}"));
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(mixin_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(mixin_dir().join(RULES)).unwrap();
    let tests = std::fs::read_to_string(mixin_dir().join(RULE_TESTS)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in alerts {
        let fired = test_lines
            .windows(2)
            .any(|pair| pair[0] == format!("alertname: {alert}") && pair[1] == "exp_alerts:");
        assert!(fired, "{RULE_TESTS} has no case in which {alert} fires");
    }
}
