//! The alerting rules in `docs/torwart-alerts.yml`: every metric they name
//! is exported, Prometheus's own checker accepts them, and each alert fires
//! when it should and not before, tested with `promtool test rules` on
//! made-up series (the labels and both annotations as Prometheus renders
//! them). promtool comes with Debian's `prometheus`, which `.ci/run`
//! installs; without it (and outside CI) the promtool half is skipped.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const RULES: &str = include_str!("../../../docs/torwart-alerts.yml");

fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/torwart-alerts.yml")
}

#[test]
fn the_rules_ask_only_for_exported_metrics() {
    // Names in the descriptions count too: a description must not send the
    // operator to a metric that is not there.
    assert_eq!(control::api::metrics::unexported(RULES), Vec::<String>::new());
    assert!(RULES.matches("torwart_").count() >= 15);
}

/// One alert's test: input series (15 s apart), times at which it must
/// not fire, and a time at which it fires with `labels` (besides
/// `alertname` and `severity`) and `summary` (none: it never fires).
struct Case {
    alert: &'static str,
    series: &'static [(&'static str, &'static str)],
    quiet_at: &'static [&'static str],
    fires_at: &'static str,
    severity: &'static str,
    labels: &'static [(&'static str, &'static str)],
    summary: &'static str,
}

/// `job` and `instance` of every made-up series.
const TARGET: &str = r#"job="torwart", instance="gw1:9680""#;

const CASES: &[Case] = &[
    Case {
        alert: "TorwartDown",
        series: &[("up{J}", "1 1 1 1 0x20")],
        quiet_at: &["30s", "1m30s"],
        fires_at: "2m15s",
        severity: "critical",
        labels: &[],
        summary: "torwart on gw1:9680 does not answer its scrapes",
    },
    Case {
        alert: "TorwartPortDown",
        series: &[
            (r#"torwart_port_up{J, interface="eth1", side="outside"}"#, "1 1 0x10"),
            (r#"torwart_port_up{J, interface="eth0", side="inside"}"#, "1x12"),
        ],
        quiet_at: &["45s"],
        fires_at: "1m15s",
        severity: "critical",
        labels: &[("interface", "eth1"), ("side", "outside")],
        summary: "torwart port eth1 (outside) on gw1:9680 is down",
    },
    Case {
        alert: "TorwartPortFlapping",
        series: &[(r#"torwart_port_link_downs_total{J, interface="eth1", side="outside"}"#, "0 0 1 1 2 2 3 3 3 3")],
        quiet_at: &["1m"],
        fires_at: "2m",
        severity: "warning",
        labels: &[("interface", "eth1"), ("side", "outside")],
        summary: "torwart port eth1 (outside) on gw1:9680 went down 3 times or more in 15 minutes",
    },
    Case {
        alert: "TorwartFramesUnserved",
        series: &[
            (r#"torwart_drops_total{J, reason="xdp_unserved"}"#, "0+5x20"),
            (r#"torwart_drops_total{J, reason="unsolicited_inbound"}"#, "0+50x20"),
        ],
        quiet_at: &["1m"],
        fires_at: "2m30s",
        severity: "critical",
        labels: &[("reason", "xdp_unserved")],
        summary: "torwart on gw1:9680 drops frames that no worker serves",
    },
    Case {
        alert: "TorwartWorkersRestarted",
        series: &[("torwart_workers_restarted_total{J}", "0 0 0 1 1 1")],
        quiet_at: &["30s"],
        fires_at: "1m",
        severity: "warning",
        labels: &[],
        summary: "torwart on gw1:9680 started its workers again",
    },
    Case {
        alert: "TorwartPolicyRefused",
        // Refused from 30 s until a reload is done at 10 min.
        series: &[("torwart_policy_refused{J}", "0 0 1x38 0x20")],
        quiet_at: &["15s", "11m"],
        fires_at: "1m",
        severity: "warning",
        labels: &[],
        summary: "torwart on gw1:9680 refused the member database's latest policy",
    },
    Case {
        alert: "TorwartFlowTableFilling",
        // Worker 1's table at 95 % from 1 min on; worker 0's at half.
        series: &[
            (r#"torwart_worker_flows{J, worker="0"}"#, "500x60"),
            (r#"torwart_worker_flows{J, worker="1"}"#, "0 0 0 0 950x56"),
            (r#"torwart_worker_flow_capacity{J, worker="0"}"#, "1000x60"),
            (r#"torwart_worker_flow_capacity{J, worker="1"}"#, "1000x60"),
        ],
        quiet_at: &["5m", "10m"],
        fires_at: "12m",
        severity: "warning",
        labels: &[],
        summary: "torwart on gw1:9680: a worker's flow table is over 90 % full",
    },
    Case {
        alert: "TorwartStartedFromLastGood",
        // Started from the last good file at 30 s; the database gives a
        // policy at 10 min.
        series: &[("torwart_policy_from_last_good{J}", "0 0 1x38 0x20")],
        quiet_at: &["15s", "11m"],
        fires_at: "1m",
        severity: "critical",
        labels: &[],
        summary: "torwart on gw1:9680 forwards with the last good member database",
    },
    Case {
        alert: "TorwartUsageNotWritten",
        series: &[
            // A failure a minute, from the first minute on.
            (r#"torwart_usage_flushes_total{J, result="failed"}"#, "0 0 0 0 0+0.25x100"),
            (r#"torwart_usage_flushes_total{J, result="written"}"#, "0x100"),
        ],
        quiet_at: &["5m", "14m"],
        fires_at: "17m",
        severity: "warning",
        labels: &[("result", "failed")],
        summary: "torwart on gw1:9680 cannot write member usage to the database",
    },
    Case {
        alert: "TorwartUsageNotWritten",
        // One failed write, then the database works again: no alert.
        series: &[(r#"torwart_usage_flushes_total{J, result="failed"}"#, "0 0 0 0 1x100")],
        quiet_at: &["5m", "10m", "15m", "20m"],
        fires_at: "",
        severity: "warning",
        labels: &[],
        summary: "",
    },
    Case {
        alert: "TorwartFlowTableFull",
        series: &[(r#"torwart_drops_total{J, reason="flow_table_full"}"#, "0 0 0 7 7 7")],
        quiet_at: &["30s"],
        fires_at: "1m",
        severity: "warning",
        labels: &[("reason", "flow_table_full")],
        summary: "torwart on gw1:9680: the flow table is full, new connections are refused",
    },
    Case {
        alert: "TorwartNatPortsExhausted",
        series: &[
            (r#"torwart_drops_total{J, reason="nat_ports_exhausted"}"#, "0 0 0 2 2 2"),
            (r#"torwart_drops_total{J, reason="nat_quota"}"#, "0+9x5"),
        ],
        quiet_at: &["30s"],
        fires_at: "1m",
        severity: "warning",
        labels: &[("reason", "nat_ports_exhausted")],
        summary: "torwart on gw1:9680: members ran out of NAT ports",
    },
    Case {
        alert: "TorwartOverloaded",
        series: &[
            // 20 a second: overloaded; 1 a second: not.
            (r#"torwart_drops_total{J, reason="rx_lost"}"#, "0+300x60"),
            (r#"torwart_drops_total{J, reason="tx_ring_full"}"#, "0+15x60"),
        ],
        // The 5-minute rate passes 10 a second after some 2.5 minutes of 20.
        quiet_at: &["6m"],
        fires_at: "8m",
        severity: "warning",
        labels: &[("reason", "rx_lost")],
        summary: "torwart on gw1:9680 loses frames for want of capacity (rx_lost)",
    },
    Case {
        alert: "TorwartWorkerBusy",
        series: &[
            (r#"torwart_worker_load{J, worker="0"}"#, "0.95x150"),
            (r#"torwart_worker_load{J, worker="1"}"#, "0.5x150"),
        ],
        quiet_at: &["10m"],
        fires_at: "16m",
        severity: "info",
        labels: &[("worker", "0")],
        summary: "torwart worker 0 on gw1:9680 has been busy over 90 % of the time for 25 minutes",
    },
    Case {
        alert: "TorwartPairPeerLost",
        series: &[("torwart_pair_peer_alive{J}", "1 1 0x20")],
        quiet_at: &["45s"],
        fires_at: "1m45s",
        severity: "critical",
        labels: &[],
        summary: "torwart on gw1:9680 hears nothing from the other box of its pair",
    },
    Case {
        alert: "TorwartPairNotReady",
        series: &[
            ("torwart_pair_ready{J}", "0x40"),
            ("torwart_pair_peer_alive{J}", "1x40"),
            // The peer gone: TorwartPairPeerLost says so, this one not.
            (r#"torwart_pair_ready{job="torwart", instance="gw2:9680"}"#, "0x40"),
            (r#"torwart_pair_peer_alive{job="torwart", instance="gw2:9680"}"#, "0x40"),
        ],
        quiet_at: &["4m"],
        fires_at: "5m15s",
        severity: "warning",
        labels: &[],
        summary: "torwart on gw1:9680 could not take over from the other box without losing connections",
    },
    Case {
        alert: "TorwartSyncRecordsLost",
        series: &[
            (r#"torwart_pair_events_total{J, event="records_lost"}"#, "0 0 3 3"),
            (r#"torwart_pair_events_total{J, event="worker_lost"}"#, "0 0 0 0"),
            (r#"torwart_pair_events_total{J, event="records_sent"}"#, "0+100x3"),
        ],
        quiet_at: &["15s"],
        fires_at: "45s",
        severity: "warning",
        labels: &[("event", "records_lost")],
        summary: "torwart on gw1:9680 lost state sync records (records_lost)",
    },
    Case {
        alert: "TorwartSyncForged",
        series: &[(r#"torwart_pair_events_total{J, event="refused_tag"}"#, "0 0 0 2 2")],
        quiet_at: &["30s"],
        fires_at: "1m",
        severity: "warning",
        labels: &[("event", "refused_tag")],
        summary: "torwart on gw1:9680 refused sync datagrams with a wrong tag",
    },
];

/// Each alert's description as Prometheus renders it: the folded (`>-`)
/// block under `description:`, its lines joined by spaces.
fn descriptions(rules: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut alert = None;
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert: ") {
            alert = Some(name.trim().to_owned());
        } else if t == "description: >-" {
            let indent = line.len() - t.len();
            let mut text = Vec::new();
            while let Some(next) = lines.peek() {
                let n = next.trim_start();
                if n.is_empty() || next.len() - n.len() <= indent {
                    break;
                }
                text.push(n.trim_end());
                lines.next();
            }
            let name = alert.clone().expect("a description belongs to an alert");
            assert!(!text.is_empty(), "{name}: an empty description");
            out.insert(name, text.join(" "));
        }
    }
    out
}

#[test]
fn every_alert_has_a_case() {
    let described = descriptions(RULES);
    let alerts: Vec<&str> = RULES.lines().filter_map(|l| l.trim_start().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), described.len(), "every alert has a description");
    for a in &alerts {
        assert!(CASES.iter().any(|c| c.alert == *a), "no case tests {a}");
    }
}

/// The promtool test file for [`CASES`] (JSON, which YAML readers take).
fn promtool_tests(rules: &Path) -> Value {
    let described = descriptions(RULES);
    let tests: Vec<Value> = CASES
        .iter()
        .map(|c| {
            let series: Vec<Value> = c
                .series
                .iter()
                .map(|(s, v)| json!({"series": s.replace("{J", &format!("{{{TARGET}")), "values": v}))
                .collect();
            let mut labels = serde_json::Map::new();
            labels.insert("severity".into(), c.severity.into());
            labels.insert("job".into(), "torwart".into());
            labels.insert("instance".into(), "gw1:9680".into());
            for (k, v) in c.labels {
                labels.insert((*k).into(), (*v).into());
            }
            let description = described.get(c.alert).unwrap_or_else(|| panic!("{} has no description", c.alert));
            let mut checks: Vec<Value> =
                c.quiet_at.iter().map(|t| json!({"eval_time": t, "alertname": c.alert, "exp_alerts": []})).collect();
            if c.fires_at.is_empty() {
                return json!({"interval": "15s", "input_series": series, "alert_rule_test": checks});
            }
            checks.push(json!({
                "eval_time": c.fires_at,
                "alertname": c.alert,
                "exp_alerts": [{
                    "exp_labels": labels,
                    "exp_annotations": {"summary": c.summary, "description": description},
                }],
            }));
            json!({"interval": "15s", "input_series": series, "alert_rule_test": checks})
        })
        .collect();
    json!({"rule_files": [rules], "evaluation_interval": "15s", "tests": tests})
}

fn promtool() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "promtool is missing (.ci/run installs prometheus)");
        println!("skipped: promtool is not installed");
    }
    found
}

#[test]
fn promtool_accepts_the_rules() {
    if !promtool() {
        return;
    }
    let out = Command::new("promtool").arg("check").arg("rules").arg(rules_path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let alerts = std::fs::read_to_string(rules_path()).unwrap().matches("- alert:").count();
    assert!(text.contains(&format!("SUCCESS: {alerts} rules found")), "{text}");
}

#[test]
fn each_alert_fires_when_it_should_and_not_before() {
    if !promtool() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("torwart-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tests.yml");
    let rules = rules_path().canonicalize().unwrap();
    std::fs::write(&file, serde_json::to_string_pretty(&promtool_tests(&rules)).unwrap()).unwrap();
    let out = Command::new("promtool").arg("test").arg("rules").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}
