//! `kubeecr serve` when the API server misbehaves in ways a real one won't on demand: a
//! compacted watch (410), 409s, 429s with `Retry-After`, 500s, dropped connections, lost
//! answers, slow answers, a Lease that cannot be renewed; and when ECR throttles or fails.
//! On the API double only; each ends with nothing lost and service resumed.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;

use crate::common::*;
use crate::serve_process::{ServeProcess, eventually, has_password, secret_when};

const US: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
const FILL: Duration = Duration::from_secs(20);

async fn filled(cluster: &TestCluster, name: &str, limit: Duration) -> bool {
    secret_when(cluster, name, limit, |s| has_password(s, US))
        .await
        .is_some()
}

async fn running(cluster: &TestCluster, ecr: &EcrProxy, extra: &[&str]) -> ServeProcess {
    let serve = ServeProcess::start(cluster, &ecr.url(), "replica-a", extra).await;
    serve.wait_ready().await;
    let led = serve.leads_within(Duration::from_secs(15)).await;
    assert!(led, "leads\n{}", serve.logs());
    serve
}

/// Changes made while the watch was away, and whose events were compacted away (410), are
/// found by listing again: a new Secret is filled, a deleted one is forgotten.
#[tokio::test]
async fn a_compacted_watch_lists_again_and_misses_nothing() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let serve = running(&cluster, &ecr, &[]).await;
    create_opted_in(&client, ns, "gone", "123456789012/us-west-2").await;
    assert!(filled(&cluster, "gone", FILL).await);

    double.pause_watches(true);
    Api::<Secret>::namespaced(client.clone(), ns)
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    create_opted_in(&client, ns, "new", "123456789012/us-west-2").await;
    double.store().compact();
    double.break_watches();
    double.pause_watches(false);

    assert!(filled(&cluster, "new", FILL).await, "{}", serve.logs());
    let forgotten = eventually(Duration::from_secs(15), || async {
        let m = serve.metrics().await;
        let managed = crate::serve_process::sample(&m, "kubeecr_secrets{state=\"filled\"}");
        (managed == Some(1.0)).then_some(())
    })
    .await;
    assert!(forgotten.is_some(), "only the new Secret is tracked");
    let relists = double
        .requests()
        .iter()
        .filter(|r| r.is_metadata_only() && !r.is_watch() && !r.query.contains("continue"))
        .count();
    assert!(relists >= 2, "the metadata watch listed again: {relists}");
}

/// A list page that fails is asked for again from where the watch's list was, not from the
/// first page: a page that fails every time cannot make it list everything in a loop.
#[tokio::test]
async fn a_failed_list_page_is_asked_for_again() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    for i in 0..3 {
        create_opted_in(&client, ns, &format!("s{i}"), "123456789012/us-west-2").await;
    }
    double.fail_next(Method::GET, "continue=", 1, 500, "InternalError");
    let serve = running(&cluster, &ecr, &["--page-size", "1"]).await;
    for i in 0..3 {
        assert!(
            filled(&cluster, &format!("s{i}"), FILL).await,
            "{}",
            serve.logs()
        );
    }
    let requests = double.requests();
    let lists: Vec<_> = requests
        .iter()
        .filter(|r| r.method == Method::GET && r.query.contains("limit=1") && !r.is_watch())
        .collect();
    assert!(
        lists.iter().any(|r| r.status() == Some(500)),
        "a list met the fault"
    );
    for metadata_only in [true, false] {
        let first_pages = lists
            .iter()
            .filter(|r| r.is_metadata_only() == metadata_only && !r.query.contains("continue"))
            .count();
        assert_eq!(
            first_pages,
            1,
            "metadata only: {metadata_only}: listed once\n{}",
            serve.logs()
        );
    }
}

/// A watch event that does not decode is reported and skipped; the watch goes on and later
/// Secrets are filled.
#[tokio::test]
async fn an_undecodable_watch_event_is_skipped() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    // Both watches get one line that is no Secret, then their answer ends.
    let line = r#"{"type":"ADDED","object":{"metadata":7}}"#;
    double.answer_next(Method::GET, "watch=true", 2, 200, &format!("{line}\n"));
    let serve = running(&cluster, &ecr, &[]).await;
    create_opted_in(&client, ns, "after", "123456789012/us-west-2").await;
    assert!(filled(&cluster, "after", FILL).await, "{}", serve.logs());
    let logs = serve.logs();
    assert!(
        logs.contains("a watch event did not decode; it is skipped"),
        "{logs}"
    );
    assert!(!logs.contains("(HTTP 0)"), "{logs}");
}

/// 500s and dropped connections on lists, watches and patches: the watches retry with
/// backoff, the failed patch is retried, and every Secret ends up filled.
#[tokio::test]
async fn api_errors_and_dropped_connections_then_recovery() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let serve = running(&cluster, &ecr, &[]).await;
    // Both watches (managed, metadata) open, so that breaking them makes them open again.
    let open = eventually(Duration::from_secs(10), || async {
        (double.open_watches() >= 2).then_some(())
    })
    .await;
    assert!(open.is_some(), "watching\n{}", serve.logs());

    double.fail_next(Method::GET, "/secrets", 2, 500, "InternalError");
    double.drop_next(Method::GET, "/secrets", 2);
    double.fail_next(Method::PATCH, "/secrets/s", 2, 500, "InternalError");
    double.drop_next(Method::PATCH, "/secrets/s", 1);
    double.break_watches();
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    // The watches, opening again, meet the four GET faults before this test's own reads do.
    let refused = eventually(Duration::from_secs(30), || async {
        let n = double
            .requests()
            .iter()
            .filter(|r| r.method == Method::GET && r.query.contains("labelSelector"))
            .filter(|r| r.status() != Some(200))
            .count();
        (n >= 4).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the watches met the faults\n{}",
        serve.logs()
    );
    assert!(
        filled(&cluster, "s", Duration::from_secs(40)).await,
        "{}",
        serve.logs()
    );

    let m = serve.metrics().await;
    let watch_errors: f64 = m
        .lines()
        .filter(|l| l.starts_with("kubeecr_watch_errors_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(watch_errors >= 1.0, "{m}\n{}", serve.logs());
    assert!(
        crate::serve_process::sample(&m, "kubeecr_refreshes_total{outcome=\"failed\"}")
            >= Some(2.0),
        "{m}"
    );
    let logs = serve.logs();
    assert!(
        logs.contains("patching it: injected 500 InternalError (HTTP 500 InternalError)"),
        "{logs}"
    );
    assert_eq!(
        serve.readyz().await,
        Some(200),
        "ready throughout: the index was synced"
    );
}

/// A slow API server delays a write but loses nothing.
#[tokio::test]
async fn slow_answers_are_waited_for() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let _serve = running(&cluster, &ecr, &[]).await;
    double.delay_next(Method::PATCH, "/secrets/slow", 1, Duration::from_secs(3));
    create_opted_in(&client, cluster.ns(), "slow", "123456789012/us-west-2").await;
    assert!(filled(&cluster, "slow", FILL).await);
}

/// A leader that cannot renew its Lease stops leading before the lease runs out, and leads
/// again once the API server answers.
#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_then_leads_again() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let serve = running(
        &cluster,
        &ecr,
        &[
            "--lease-duration",
            "4s",
            "--lease-renew-deadline",
            "2s",
            "--lease-retry-period",
            "300ms",
        ],
    )
    .await;
    // About 6 s of failed renewals.
    double.fail_next(Method::GET, "/leases/kubeecr", 20, 500, "InternalError");
    let stepped_down = eventually(Duration::from_secs(10), || async {
        (!serve.is_leader().await).then_some(())
    })
    .await;
    assert!(stepped_down.is_some(), "stopped leading\n{}", serve.logs());
    assert!(
        serve
            .logs()
            .contains("could not renew the Lease in time; stepping down")
    );
    let leads_again = serve.leads_within(Duration::from_secs(20)).await;
    assert!(leads_again, "leads again\n{}", serve.logs());
}

/// Memory does not depend on unrelated Secrets: they are only ever seen as metadata.
#[tokio::test]
async fn unrelated_secrets_are_only_ever_seen_as_metadata() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_helm_release(&client, ns).await;
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    let serve = running(&cluster, &ecr, &[]).await;
    assert!(filled(&cluster, "s", FILL).await);
    let requests = double.requests();
    let reads: Vec<_> = requests
        .iter()
        .filter(|r| r.method == Method::GET && r.path.contains("/secrets"))
        .collect();
    assert!(reads.iter().any(|r| r.is_watch()), "watched");
    for r in &reads {
        let full_list_or_watch = r.path.ends_with("/secrets") && !r.is_metadata_only();
        assert!(
            !full_list_or_watch
                || r.label_selector().as_deref() == Some("deft.com/kubeecr-managed=true"),
            "full reads select kubeecr's Secrets only: {r:?}"
        );
        assert!(
            !r.path.ends_with(&format!("/{HELM_RELEASE}")),
            "never read: {r:?}"
        );
    }
    drop(serve);
}

/// ECR throttling, then 5xx (issue 10's faults): no retry storm while it lasts. Each fetch
/// is at most the SDK's 3 attempts, and after each failed fetch the next waits at least the
/// cache's floor, which doubles with the failures in a row from --min-fetch-interval to five
/// times it (1 s, 2 s, 4 s, 5 s). The Secret is filled once ECR is back.
#[tokio::test]
async fn a_failing_ecr_is_tried_less_and_less_and_used_again_once_back() {
    use kubeecr_testkit::moto::EcrFault;

    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let serve = running(
        &cluster,
        &ecr,
        &["--min-fetch-interval", "1s", "--aws-timeout", "5s"],
    )
    .await;
    let fetches_reach = |n: usize| {
        let (ecr, serve) = (&ecr, &serve);
        async move {
            let reached = eventually(Duration::from_secs(60), || async {
                (ecr.token_fetches().len() >= n).then_some(())
            })
            .await;
            assert!(
                reached.is_some(),
                "{n} fetches: {:?}\n{}",
                ecr.token_fetches(),
                serve.logs()
            );
        }
    };
    ecr.set_fault(Some(EcrFault::Throttling));
    create_opted_in(&client, cluster.ns(), "s", "123456789012/us-west-2").await;
    fetches_reach(3).await;
    ecr.set_fault(Some(EcrFault::ServerError));
    fetches_reach(5).await;
    // Every fetch met a fault; the last may still be retrying.
    let fetches = ecr.token_fetches();
    for (k, fetch) in fetches.iter().enumerate() {
        let after = k
            .checked_sub(1)
            .map(|j| fetch[0].at.duration_since(fetches[j][0].at));
        println!(
            "fetch {}: {} attempts, {after:?} after the one before",
            k + 1,
            fetch.len()
        );
    }
    for fetch in &fetches {
        assert!(
            fetch.len() <= 3,
            "{} attempts in one fetch: the SDK retries at most twice\n{}",
            fetch.len(),
            serve.logs()
        );
    }
    let floors = [1, 2, 4, 5, 5, 5, 5].map(Duration::from_secs);
    for (k, pair) in fetches.windows(2).enumerate() {
        let gap = pair[1][0].at.duration_since(pair[0][0].at);
        // The floor counts from the fetch's start in kubeecr, a moment before its first
        // attempt reaches ECR (on a loaded machine, up to a second before).
        assert!(
            gap + Duration::from_secs(1) >= floors[k.min(floors.len() - 1)],
            "fetch {} came {gap:?} after the one before, {} failures in a row\n{}",
            k + 2,
            k + 1,
            serve.logs()
        );
    }
    let logs = serve.logs();
    for n in 1..=4 {
        assert!(
            logs.contains(&format!("failures_in_a_row={n}")),
            "the failures are logged with their count: {n}\n{logs}"
        );
    }
    ecr.set_fault(None);
    // The refresher's own backoff for the Secret may have grown to 16–32 s by now; the
    // cache's is 5 s.
    assert!(
        filled(&cluster, "s", Duration::from_secs(60)).await,
        "filled once ECR is back\n{}",
        serve.logs()
    );
}

/// The API server's refusals, each retried as it asks: a 409 (read again, decide again), 429
/// with `Retry-After` (waited out, on the list and on a write), 500s and dropped connections
/// (backed off), and a write that landed but whose answer was lost (found done, not redone).
/// Every Secret is filled, and each one's data is written exactly once.
#[tokio::test]
async fn api_refusals_are_retried_and_each_secret_is_written_once() {
    let cluster = TestCluster::double().await;
    let double = cluster.double_server().unwrap();
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let names = ["conflict", "throttled", "failed", "dropped", "answer-lost"];
    for name in names {
        create_opted_in(&client, ns, name, "123456789012/us-west-2").await;
    }
    let writes = DataWrites::start(&client, ns).await;
    double.clear_requests();
    double.throttle_next(Method::GET, "kubeecr-managed%3Dtrue&limit", 1, 2);
    double.fail_next(Method::PATCH, "/secrets/conflict", 1, 409, "Conflict");
    double.throttle_next(Method::PATCH, "/secrets/throttled", 2, 2);
    double.fail_next(Method::PATCH, "/secrets/failed", 2, 500, "InternalError");
    double.drop_next(Method::PATCH, "/secrets/dropped", 1);
    double.lose_next_answer(Method::PATCH, "/secrets/answer-lost", 1);

    let serve = running(&cluster, &ecr, &[]).await;
    for name in names {
        assert!(
            filled(&cluster, name, FILL).await,
            "{name} filled\n{}",
            serve.logs()
        );
    }
    // kubeecr is idle: every Secret filled as it sees them, none due or failing, so no
    // retry is left to come. Then the watch counting writes catches up with the API.
    let idle = eventually(Duration::from_secs(30), || async {
        let m = serve.metrics().await;
        let state = |s: &str| {
            crate::serve_process::sample(&m, &format!("kubeecr_secrets{{state=\"{s}\"}}"))
        };
        (state("filled") == Some(names.len() as f64)
            && state("due") == Some(0.0)
            && state("failing") == Some(0.0))
        .then_some(())
    })
    .await;
    assert!(idle.is_some(), "kubeecr settled\n{}", serve.logs());
    writes.sync().await;
    let once: std::collections::BTreeMap<String, usize> =
        names.iter().map(|n| (n.to_string(), 1)).collect();
    assert_eq!(writes.counts(), once, "{}", serve.logs());
    // And as the API server saw it: one write carried out per Secret, whatever was retried.
    let requests = double.requests();
    for name in names {
        let carried_out = requests
            .iter()
            .filter(|r| r.method == Method::PATCH && r.path.ends_with(&format!("/secrets/{name}")))
            .filter(|r| r.status().is_some_and(|s| s < 300))
            .count();
        assert_eq!(carried_out, 1, "{name}");
    }

    // Retry-After was waited out: no retry came sooner than the 2 s asked for.
    let patches: Vec<_> = requests
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with("/secrets/throttled"))
        .map(|r| r.at)
        .collect();
    assert!(
        patches.len() >= 3,
        "two refusals, then the write: {patches:?}"
    );
    for pair in patches[..3].windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    }
    let list = |r: &kubeecr_testkit::apiserver::Recorded| {
        r.method == Method::GET && r.path.ends_with("/secrets") && !r.is_watch()
    };
    let first = requests
        .iter()
        .find(|r| list(r) && r.status() == Some(429))
        .expect("the throttled list");
    let again = requests
        .iter()
        .filter(|r| list(r) && r.query == first.query && r.accept == first.accept)
        .map(|r| r.at.duration_since(first.at))
        .nth(1);
    assert!(
        again.is_some_and(|gap| gap >= Duration::from_millis(1900)),
        "the throttled list was asked again after 2 s: {again:?}"
    );
}
