//! kubeecr's alerts and dashboard (charts/kubeecr/files/), checked with the real tools:
//! promtool's unit tests of every alert; a live Prometheus (Debian's, on 127.0.0.1) scraping a
//! real `kubeecr serve` whose ECR fails, where the refresh alert fires and resolves; and every
//! metric the rules and the dashboard name is one `kubeecr serve` exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::{EcrFault, EcrProxy};
use serde_json::Value;

use crate::common::*;
use crate::install::{repo, tool_present};
use crate::serve_process::{ServeProcess, eventually, free_port, http_get};

const ALERTS: &str = "charts/kubeecr/files/alerts.yaml";
const DASHBOARD: &str = "charts/kubeecr/files/dashboard.json";

fn has(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool_present(
        found,
        &format!("{tool} (Debian's prometheus; scripts/test.sh installs it)"),
    )
}

/// promtool's unit tests: every alert fires when it should and stays quiet when all is well.
#[test]
fn every_alert_passes_its_promtool_tests() {
    if !has("promtool") {
        return;
    }
    for file in ["alerts.test.yaml", "alerts-cronjob.test.yaml"] {
        let out = Command::new("promtool")
            .args(["test", "rules"])
            .arg(repo().join("tests/fixtures/monitoring").join(file))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "{file}:\n{text}"
        );
    }
    // Every alert of both files has a test (and a runbook, which docs.rs checks).
    for (rules, tests) in [
        ("alerts.yaml", "alerts.test.yaml"),
        ("alerts-cronjob.yaml", "alerts-cronjob.test.yaml"),
    ] {
        let tests =
            std::fs::read_to_string(repo().join("tests/fixtures/monitoring").join(tests)).unwrap();
        for alert in alert_names(&repo().join("charts/kubeecr/files").join(rules)) {
            assert!(
                tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n")),
                "{alert} is expected to fire in some test"
            );
            assert!(
                tests.contains(&format!("alertname: {alert}}}")),
                "{alert} is expected to stay quiet in some test"
            );
        }
    }
}

fn rules_of(path: &Path) -> Vec<Value> {
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

pub fn alert_names(path: &Path) -> Vec<String> {
    rules_of(path)
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

/// The `kubeecr_*` names in PromQL `exprs`.
fn metric_names<'a>(exprs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr;
        while let Some(at) = rest.find("kubeecr_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// The sample names a Prometheus text exposition offers, from its `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// Every metric the alerts and the dashboard name is one a running `kubeecr serve` exports,
/// with its type's suffix; and the dashboard shows what the issue asks of it.
#[tokio::test]
async fn the_rules_and_the_dashboard_name_only_exported_metrics() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    // A fill (an ECR call, a cached token) and an admission, so that every family has a
    // series: families whose labels are not known up front have none before.
    create_opted_in(
        &cluster.client(),
        cluster.ns(),
        "s",
        "123456789012/us-west-2",
    )
    .await;
    let filled = crate::serve_process::secret_when(&cluster, "s", Duration::from_secs(30), |s| {
        crate::serve_process::has_password(s, "123456789012.dkr.ecr.us-west-2.amazonaws.com")
    })
    .await;
    assert!(filled.is_some(), "{}", serve.logs());
    let https = kubeecr_testkit::tls::https_client(
        serve.ca.pem().as_bytes(),
        kubeecr_testkit::tls::Alpn::Both,
    );
    let (_, review) = fixture_in(
        "09-create-malformed-annotation-mutate-create.json",
        cluster.ns(),
    );
    let request = http::Request::post(format!("https://127.0.0.1:{}/mutate", serve.webhook_port))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&review).unwrap(),
        )))
        .unwrap();
    assert_eq!(https.request(request).await.unwrap().status(), 200);
    let offered = exported(&serve.metrics().await);
    assert!(offered.contains("kubeecr_refreshes_total"), "{offered:?}");

    let rules = rules_of(&repo().join(ALERTS));
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    let dashboard = dashboard_exprs();
    let named = metric_names(exprs.iter().chain(dashboard.iter()).map(String::as_str));
    assert!(named.len() >= 15, "{named:?}");
    let unknown: Vec<&String> = named.iter().filter(|n| !offered.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?}\noffered: {offered:?}"
    );
    // Tokens and expiry, refreshes, ECR calls, admission rate, latency and refusals, the
    // leader and memory, each on some panel.
    let shown = metric_names(dashboard.iter().map(String::as_str));
    for needed in [
        "kubeecr_secret_expiry_soonest_timestamp_seconds",
        "kubeecr_token_expiry_timestamp_seconds",
        "kubeecr_refreshes_total",
        "kubeecr_ecr_calls_total",
        "kubeecr_admission_requests_total",
        "kubeecr_admission_duration_seconds_bucket",
        "kubeecr_http_refused_total",
        "kubeecr_leader",
        "kubeecr_process_resident_memory_bytes",
    ] {
        assert!(shown.contains(needed), "the dashboard shows {needed}");
    }
}

/// Debian's Prometheus on 127.0.0.1, scraping `target` every second with `rules`; stopped
/// when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: u16, rules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        // The labels the Prometheus Operator puts on what it scrapes, which the rules select by.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: kubeecr\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n\
             \x20       labels: {{namespace: kubeecr, pod: kubeecr-replica-a}}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(30), || async {
            matches!(http_get(port, "/-/ready").await, Some((200, _))).then_some(())
        })
        .await;
        assert!(ready.is_some(), "Prometheus is ready");
        prometheus
    }

    /// The state of `alert` in Prometheus's own `/api/v1/alerts`: `firing`, `pending`, or
    /// `None` when it is not active.
    async fn alert_state(&self, alert: &str) -> Option<String> {
        let (status, body) = http_get(self.port, "/api/v1/alerts")
            .await
            .expect("Prometheus answers");
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .map(|a| a["state"].as_str().unwrap().to_string())
    }

    /// The value of instant `query`, if it returns one sample.
    async fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(query));
        let (_, body) = http_get(self.port, &path).await?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` at 2s, as the only change: the test cannot wait 15
/// minutes.
fn rules_with_short_for() -> String {
    let text = std::fs::read_to_string(repo().join(ALERTS)).unwrap();
    let shortened: Vec<String> = text
        .lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s"),
            _ => l.to_string(),
        })
        .collect();
    let changed = shortened.join("\n");
    assert_ne!(changed, text, "the rules have `for:` durations to shorten");
    changed
}

/// The refresh alert, on a real Prometheus scraping a real `kubeecr serve`: ECR fails, a new
/// Secret's refresh fails, and `KubeecrRefreshesFailing` fires in Prometheus's own alerts;
/// ECR comes back, the Secret is filled, and the alert resolves. The leader alert stays quiet
/// throughout.
#[tokio::test]
async fn the_refresh_alert_fires_and_resolves_on_a_real_prometheus() {
    if !has("prometheus") {
        return;
    }
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    ecr.set_fault(Some(EcrFault::ServerError));
    let serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "replica-a",
        &["--max-backoff", "2s", "--min-fetch-interval", "1s"],
    )
    .await;
    serve.wait_ready().await;
    let prometheus = Prometheus::start(serve.admin_port, &rules_with_short_for()).await;
    create_opted_in(
        &cluster.client(),
        cluster.ns(),
        "s",
        "123456789012/us-west-2",
    )
    .await;

    let fired = eventually(Duration::from_secs(60), || async {
        (prometheus
            .alert_state("KubeecrRefreshesFailing")
            .await
            .as_deref()
            == Some("firing"))
        .then_some(())
    })
    .await;
    assert!(
        fired.is_some(),
        "KubeecrRefreshesFailing fires\n{}",
        serve.logs()
    );
    assert_eq!(
        prometheus
            .value("max(kubeecr_secrets{state=\"failing\"})")
            .await,
        Some(1.0)
    );
    assert_eq!(prometheus.alert_state("KubeecrNoLeader").await, None);

    ecr.set_fault(None);
    let resolved = eventually(Duration::from_secs(60), || async {
        prometheus
            .alert_state("KubeecrRefreshesFailing")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the alert resolves\n{}", serve.logs());
    let filled = get(&cluster.client(), cluster.ns(), "s").await;
    assert_eq!(
        password_of(
            &dockerconfig(&filled),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        ),
        ecr.newest("us-west-2", None).unwrap().password
    );
    assert_eq!(prometheus.alert_state("KubeecrNoLeader").await, None);
}

/// The figures the expiry alerts read, from a running `kubeecr serve`: the soonest expiry is
/// the one written on the Secret, and a token ECR issued for one hour (less than half of the
/// default 4 h margin) counts as past renewal.
#[tokio::test]
async fn the_expiry_figures_are_the_secrets() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let sample = |m: &str, s: &str| crate::serve_process::sample(m, s);
    let soonest = "kubeecr_secret_expiry_soonest_timestamp_seconds";
    let past = "kubeecr_secrets_past_renewal";
    assert_eq!(
        sample(&serve.metrics().await, soonest),
        Some(f64::INFINITY),
        "no Secret yet"
    );

    create_opted_in(
        &cluster.client(),
        cluster.ns(),
        "fresh",
        "123456789012/us-west-2",
    )
    .await;
    let fresh =
        crate::serve_process::secret_when(&cluster, "fresh", Duration::from_secs(30), |s| {
            crate::serve_process::has_password(s, host)
        })
        .await
        .expect("filled");
    let written: jiff::Timestamp = annotation(&fresh, "deft.com/kubeecr-expires-at")
        .unwrap()
        .parse()
        .unwrap();
    let reported = eventually(Duration::from_secs(15), || async {
        let m = serve.metrics().await;
        (sample(&m, soonest) == Some(written.as_second() as f64)).then_some(m)
    })
    .await;
    let m = reported.unwrap_or_else(|| panic!("{}", serve.logs()));
    assert_eq!(sample(&m, past), Some(0.0));

    // The next token lives one hour.
    let hour = jiff::Timestamp::now().as_second() + 3600;
    ecr.set_token_style(kubeecr_testkit::moto::TokenStyle::EcrExpiringAt(hour));
    create_opted_in(
        &cluster.client(),
        cluster.ns(),
        "short",
        "123456789012/us-east-1",
    )
    .await;
    let counted = eventually(Duration::from_secs(30), || async {
        let m = serve.metrics().await;
        (sample(&m, past) == Some(1.0)).then_some(m)
    })
    .await;
    let m = counted.unwrap_or_else(|| panic!("{}", serve.logs()));
    assert_eq!(
        sample(&m, soonest),
        Some(hour as f64),
        "the short token is the soonest"
    );
}
