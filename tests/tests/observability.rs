//! Observability end to end: the files in `grafana/` against the real
//! `fleetgate` binary and a real Prometheus.
//!
//! - The dashboard (`grafana/fleetgate-dashboard.json`) is parsed, and every
//!   metric name in every panel query must be a constant in
//!   `fleetgate_registry::metrics::ALL` *and* appear in a live gateway's
//!   `/metrics`. Renaming a metric on either side fails here, not silently
//!   in an operator's Grafana.
//! - A real Prometheus (Debian's `prometheus` package, harness in
//!   `tests/support/prometheus.rs`) scrapes a running gateway. `promtool`
//!   checks both configurations and lints both `/metrics` endpoints, and a
//!   PromQL query must count exactly the polls the test sent. Every
//!   dashboard query is then run against that Prometheus, so a PromQL syntax
//!   error in a panel fails too.
//!
//! A missing `prometheus`/`promtool` fails these tests with a message;
//! `scripts/test.sh` installs them.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetgate_registry::metrics;
use fleetgate_tests::prometheus::{
    grafana_dir, http_get, metric_types, promtool, scrape, Prometheus,
};
use fleetgate_tests::*;
use serde_json::{json, Value};

/// The histograms among `metrics::ALL`. Prometheus stores each as
/// `<name>_bucket`, `<name>_sum` and `<name>_count` series, so those
/// suffixes are stripped from these names only.
const HISTOGRAMS: [&str; 3] = [
    metrics::REQUEST_DURATION_SECONDS,
    metrics::STORE_OPERATION_DURATION_SECONDS,
    metrics::TLS_HANDSHAKE_DURATION_SECONDS,
];

/// Labels every panel filters on through dashboard variables; they come
/// from Prometheus's targets, not from the gateway.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn read_dashboard() -> Value {
    let path = grafana_dir().join("fleetgate-dashboard.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, with the panels inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("a panels array") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, query) for every target of every panel.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} has a target without expr: {t}"));
            out.push((title.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// The queries of the dashboard's query variables (`label_values(...)`).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| match &v["query"] {
            Value::String(q) => q.clone(),
            q => q["query"].as_str().expect("a variable query").to_owned(),
        })
        .collect()
}

/// One metric reference in a query: the series name as written, the
/// metric it belongs to, and the label matchers in braces after it.
#[derive(Debug, PartialEq)]
struct MetricRef {
    series: String,
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `fleetgate_…` name in `expr`. `_bucket`, `_sum` and `_count` are
/// stripped only from histogram series, so `fleetgate_requests_total_count`
/// stays as written (and then is not a known name).
fn metric_refs(expr: &str) -> Vec<MetricRef> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("fleetgate_") {
        let start = at + found;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        at = end;
        // Part of a longer identifier (`my_fleetgate_x`): not ours.
        if start > 0 && ident(bytes[start - 1]) {
            continue;
        }
        let series = expr[start..end].to_owned();
        let metric = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = series.strip_suffix(s)?;
                HISTOGRAMS.contains(&base).then(|| base.to_owned())
            })
            .unwrap_or_else(|| series.clone());
        let matchers = if expr[end..].starts_with('{') {
            let close = expr[end..].find('}').expect("unclosed label matcher") + end;
            parse_matchers(&expr[end + 1..close])
        } else {
            Vec::new()
        };
        out.push(MetricRef {
            series,
            metric,
            matchers,
        });
    }
    out
}

/// `a="x",b=~"y|z"` → [(a, =, x), (b, =~, y|z)].
fn parse_matchers(inside: &str) -> Vec<(String, String, String)> {
    inside
        .split(',')
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let op_at = m
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("matcher {m:?}"));
            let name = m[..op_at].trim().to_owned();
            let rest = &m[op_at..];
            let op_len =
                if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                    2
                } else {
                    1
                };
            let value = rest[op_len..].trim().trim_matches('"').to_owned();
            (name, rest[..op_len].to_owned(), value)
        })
        .collect()
}

/// Every metric reference in the dashboard: panel queries and variables.
fn dashboard_refs(dashboard: &Value) -> Vec<(String, MetricRef)> {
    let mut queries = panel_queries(dashboard);
    queries.extend(
        variable_queries(dashboard)
            .into_iter()
            .map(|q| ("(variable)".to_owned(), q)),
    );
    let mut out = Vec::new();
    for (title, expr) in queries {
        let refs = metric_refs(&expr);
        assert!(
            !refs.is_empty() || title == "(variable)",
            "panel {title:?} queries no fleetgate metric: {expr}"
        );
        out.extend(refs.into_iter().map(|r| (title.clone(), r)));
    }
    out
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let refs = metric_refs(
        "histogram_quantile(0.99, sum by (le) (rate(fleetgate_request_duration_seconds_bucket{job=~\"$job\"}[5m]))) \
         / sum(rate(fleetgate_requests_total{transport=\"http\",outcome=~\"shed|rate_limited\"}[5m])) \
         + fleetgate_requests_total_count + my_fleetgate_thing",
    );
    let names: Vec<&str> = refs.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "fleetgate_request_duration_seconds",
            "fleetgate_requests_total",
            // Not a histogram, so the suffix stays, and the name is unknown.
            "fleetgate_requests_total_count",
        ]
    );
    assert_eq!(refs[0].series, "fleetgate_request_duration_seconds_bucket");
    assert_eq!(
        refs[1].matchers,
        [
            ("transport".into(), "=".into(), "http".into()),
            ("outcome".into(), "=~".into(), "shed|rate_limited".into()),
        ]
    );
    assert!(!metrics::ALL.contains(&names[2]));
}

/// The structure Grafana's Import needs: a `DS_PROMETHEUS` input feeding a
/// data source variable that every panel and target uses.
#[test]
fn dashboard_imports_as_is() {
    let d = read_dashboard();
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(
        d["id"].is_null(),
        "an imported dashboard must not carry an id"
    );
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(ds["current"]["value"], "${DS_PROMETHEUS}");

    let expected_ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title:?} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], expected_ds, "panel {title:?}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"], expected_ds, "a target of {title:?}");
            assert!(ref_ids.insert(t["refId"].as_str().unwrap()), "{title:?}");
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {title:?} has no description"
        );
    }
}

/// Checks the dashboard's names against the constants, and the constants
/// against the dashboard: every metric the gateway defines has a panel.
#[test]
fn dashboard_uses_only_the_gateways_metric_names() {
    let d = read_dashboard();
    let refs = dashboard_refs(&d);
    let used: BTreeSet<&str> = refs.iter().map(|(_, r)| r.metric.as_str()).collect();
    for (title, r) in &refs {
        assert!(
            metrics::ALL.contains(&r.metric.as_str()),
            "panel {title:?} uses {:?}, which is not in fleetgate_registry::metrics::ALL",
            r.series
        );
        if r.series != r.metric {
            assert!(
                r.series.ends_with("_bucket")
                    || r.series.ends_with("_sum")
                    || r.series.ends_with("_count")
            );
        }
        // Outcome values are bounded and named in one place too.
        for (label, op, value) in &r.matchers {
            if label == "outcome" {
                assert!(op == "=" || op == "=~", "{title:?}: {label}{op}{value}");
                for v in value.split('|') {
                    assert!(
                        metrics::outcome::ALL.contains(&v),
                        "panel {title:?} matches outcome {v:?}, which the gateway never exports"
                    );
                }
            }
        }
    }
    for name in metrics::ALL {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

/// Traffic that touches every series the dashboard reads: locked, pending,
/// granted and denied polls, both login results, and MQTT CONNECTs from a
/// known user and an unknown one. The credential cache is per worker, so
/// the known user connects three times: with the test's two workers, at
/// least one CONNECT lands on a worker that has seen it (a hit).
fn exercise(g: &Gateway) {
    let token = g.admin_token();
    let bad = request(
        g.admin,
        "POST",
        "/api/login",
        &[],
        creds("admin", "not-the-password").to_string().as_bytes(),
    );
    assert_eq!(bad.status, 401, "{}", bad.text());
    let r = register(g.http, &creds("obs-locked", "secret-pw"));
    assert_eq!(r.status, 423, "{}", r.text());
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": 300_000}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for u in ["obs-granted", "obs-denied"] {
        let r = register(g.http, &creds(u, "secret-pw"));
        assert_eq!(r.status, 202, "{u}: {}", r.text());
    }
    let admin_post = |path: &str, expect: u16| {
        let r = authed(g.admin, &token, "POST", path, b"");
        assert_eq!(r.status, expect, "{path}: {}", r.text());
    };
    admin_post("/api/client-registry/requests/obs-granted/grant", 200);
    admin_post("/api/client-registry/requests/obs-denied/deny", 204);
    let r = register(g.http, &creds("obs-granted", "secret-pw"));
    assert_eq!(r.status, 201, "{}", r.text());
    // One rule decision, for `fleetgate_rule_decisions_total` (a deny, so
    // the grant count stays the admin's one).
    let rule = json!({"usernamePattern": "obs-ruled", "action": "deny"});
    let r = authed(
        g.admin,
        &token,
        "PUT",
        "/api/client-registry/rules/obs-rule",
        rule.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // The rule's series exists at 0 from now; two scrape intervals let
    // Prometheus see the 0 before the 1, or the panel's rate() is empty.
    std::thread::sleep(Duration::from_millis(2500));
    let r = register(g.http, &creds("obs-ruled", "secret-pw"));
    assert_eq!(r.status, 403, "{}", r.text());

    let connect = |client: &str, user: &str| {
        let packet = mqtt_connect(MqttLevel::V311, client, Some(user), Some(b"secret-pw"));
        let connack = mqtt_exchange(g.mqtt, &packet);
        assert_eq!(
            connack.first(),
            Some(&0x20),
            "{user}: no CONNACK: {connack:?}"
        );
    };
    for client in ["obs-1", "obs-2", "obs-3"] {
        connect(client, "obs-granted");
    }
    connect("obs-4", "obs-mqtt-device");

    // One HTTPS request: a TLS handshake, timed.
    let url = format!("https://{}/healthz", g.https.expect("HTTPS is on"));
    let (code, _, err) = run_tool("curl", &["-sSk", &url]);
    assert_eq!(code, 0, "{err}");
}

/// The gateway's `/metrics` on its metrics port, after [`exercise`].
#[test]
fn every_dashboard_metric_is_exported_by_a_live_gateway() {
    let d = read_dashboard();
    let refs = dashboard_refs(&d);
    let g = Gateway::start(&[]);
    exercise(&g);
    let exposition = scrape(g.metrics);
    let types = metric_types(&exposition);
    let type_of = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    };
    for (title, r) in &refs {
        let Some(kind) = type_of(&r.metric) else {
            panic!(
                "panel {title:?} uses {}, but the gateway's /metrics has no `# TYPE {}` line:\n{exposition}",
                r.metric, r.metric
            );
        };
        let histogram = HISTOGRAMS.contains(&r.metric.as_str());
        assert_eq!(
            kind == "histogram",
            histogram,
            "{} is a {kind} in /metrics",
            r.metric
        );
        // Every label the panel selects on exists with that value, so the
        // panel is not silently empty. Regex matchers are checked against
        // the constants in `dashboard_uses_only_the_gateways_metric_names`.
        for (label, op, value) in &r.matchers {
            if op != "=" || TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let pair = format!("{label}=\"{value}\"");
            assert!(
                exposition
                    .lines()
                    .any(|l| l.starts_with(&format!("{}{{", r.series)) && l.contains(&pair)),
                "panel {title:?} selects {}{{{pair}}}, which /metrics does not have:\n{exposition}",
                r.series
            );
        }
    }
}

/// `promtool check metrics` on one endpoint's output: exit 0, so no
/// parse errors and no lint findings.
fn lint(what: &str, exposition: &str) {
    let out = promtool(&["check", "metrics"], Some(exposition.as_bytes()));
    assert!(
        out.status.success(),
        "promtool check metrics on {what} exited {:?}:\n{}{}\n--- the exposition:\n{exposition}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

fn check_config(path: &std::path::Path) {
    let path = path.to_str().expect("utf-8 path");
    let out = promtool(&["check", "config", path], None);
    assert!(
        out.status.success(),
        "promtool check config {path}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// How many polls the PromQL query must count.
const LOCKED_POLLS: u32 = 7;

#[test]
fn a_real_prometheus_scrapes_and_counts_the_gateways_requests() {
    let g = Gateway::start(&[]);
    let prom = Prometheus::start("fleetgate", &[g.metrics]);
    check_config(&prom.config);
    check_config(&grafana_dir().join("prometheus.yml"));

    // A first scrape lands before any poll.
    prom.wait_for("up{job=\"fleetgate\"}", Duration::from_secs(20), |v| {
        v == Some(1.0)
    });
    let locked = format!(
        "sum({}{{transport=\"http\",outcome=\"{}\"}})",
        metrics::REQUESTS_TOTAL,
        metrics::outcome::LOCKED
    );
    let before = prom.query_value(&locked);
    assert!(
        matches!(before, None | Some(0.0)),
        "{locked} = {before:?} before any poll"
    );

    // Distinct devices, so a per-device rate limit could not answer 429
    // even if the test gateway had one on.
    for i in 0..LOCKED_POLLS {
        let r = register(g.http, &creds(&format!("prom-{i:04}"), "secret-pw"));
        assert_eq!(r.status, 423, "poll {i}: {}", r.text());
    }
    let want = f64::from(LOCKED_POLLS);
    prom.wait_for(&locked, Duration::from_secs(20), |v| {
        assert!(v.unwrap_or(0.0) <= want, "{locked} overshot: {v:?}");
        v == Some(want)
    });
    // Still exactly 7 two scrapes later: nothing is counted twice.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(prom.query_value(&locked), Some(want));

    // Lint both endpoints with every kind of series present.
    exercise(&g);
    lint("the metrics port", &scrape(g.metrics));
    let admin = http_get(g.admin, "/metrics").expect("GET /metrics on the admin port");
    assert_eq!(admin.status, 200, "{}", admin.text());
    lint("the admin port", &admin.text());
    // In the all-in-one binary both ports render one registry: this is why
    // grafana/prometheus.yml scrapes them as separate jobs and the dashboard
    // shows one job at a time. (Families come in no fixed order.)
    let families = |text: &str| metric_types(text).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(
        families(&admin.text()),
        families(&scrape(g.metrics)),
        "the admin port and the metrics port export different metric families"
    );

    // Every dashboard query is valid PromQL with data behind it, run with
    // Grafana's variables replaced the way Grafana would. (The TLS
    // resumption ratio is NaN, 0/0, until TLS exists; still a sample.)
    let grants = format!("sum({}{{job=\"fleetgate\"}})", metrics::GRANTS_TOTAL);
    prom.wait_for(&grants, Duration::from_secs(20), |v| v == Some(1.0));
    let d = read_dashboard();
    for (title, expr) in panel_queries(&d) {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", "fleetgate")
            .replace("$instance", ".*");
        let data = prom.query(&promql);
        let result = data["result"].as_array().expect("a vector result");
        assert!(!result.is_empty(), "panel {title:?}: {promql} is empty");
        if title == "HTTP register polls by outcome" {
            let outcomes: Vec<&str> = result
                .iter()
                .filter_map(|s| s["metric"]["outcome"].as_str())
                .collect();
            assert!(outcomes.contains(&"locked"), "{title}: {data}");
        }
    }
}

/// The shipped `grafana/prometheus.yml`, pointed at a test gateway (its two
/// targets replaced by the gateway's metrics and admin ports): both jobs
/// scrape successfully, and the job the dashboard shows by default is one
/// of them.
#[test]
fn the_shipped_scrape_config_scrapes_both_ports() {
    let shipped = std::fs::read_to_string(grafana_dir().join("prometheus.yml"))
        .expect("read grafana/prometheus.yml");
    for default_target in ["127.0.0.1:9464", "127.0.0.1:8081"] {
        assert!(
            shipped.contains(default_target),
            "{default_target} not scraped"
        );
    }
    let g = Gateway::start(&[]);
    let config = shipped
        .replace("127.0.0.1:9464", &g.metrics.to_string())
        .replace("127.0.0.1:8081", &g.admin.to_string());
    let prom = Prometheus::start_with_config(&config);
    check_config(&prom.config);

    // Every target up, with the shipped 5 s interval: both jobs, two targets.
    prom.wait_for("sum(up)", Duration::from_secs(30), |v| v == Some(2.0));
    let d = read_dashboard();
    let default_job = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "job")
        .expect("a `job` variable")["current"]["value"]
        .as_str()
        .expect("a default job")
        .to_owned();
    for job in [default_job.as_str(), "fleetgate-admin"] {
        let series = format!("count({}{{job=\"{job}\"}})", metrics::REQUESTS_TOTAL);
        let count = prom.query_value(&series);
        assert!(count.is_some_and(|c| c > 0.0), "{series} = {count:?}");
    }
}
