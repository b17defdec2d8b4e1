//! `kubeecr serve` as a service, run as a process against the API double and, when one is
//! configured, a real kube-apiserver: the watch-driven refresher, leader election, the admin
//! port, Events, shutdown, and what its logs never hold.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use crate::serve_process::{ServeProcess, eventually, has_password, secret_when};

const US: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
const EU: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
/// Short leases, so that a takeover takes seconds.
const FAST_LEASE: &[&str] = &[
    "--lease-duration",
    "4s",
    "--lease-renew-deadline",
    "3s",
    "--lease-retry-period",
    "500ms",
];

fn secrets(cluster: &TestCluster) -> Api<Secret> {
    Api::namespaced(cluster.client(), cluster.ns())
}

async fn merge(cluster: &TestCluster, name: &str, patch: serde_json::Value) {
    secrets(cluster)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
}

fn password(s: &Secret, host: &str) -> String {
    password_of(&dockerconfig(s), host)
}

async fn lease_holder(cluster: &TestCluster) -> Option<String> {
    let lease = Api::<Lease>::namespaced(cluster.client(), cluster.ns())
        .get_opt("kubeecr")
        .await
        .unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn lease_spec(cluster: &TestCluster) -> k8s_openapi::api::coordination::v1::LeaseSpec {
    Api::<Lease>::namespaced(cluster.client(), cluster.ns())
        .get("kubeecr")
        .await
        .expect("the Lease")
        .spec
        .expect("a Lease spec")
}

/// Waits (up to `limit`) until `holder` has renewed the Lease `times` more times; whether it
/// did.
async fn renewals_by(cluster: &TestCluster, holder: &str, times: usize, limit: Duration) -> bool {
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually(limit, || async {
        let spec = lease_spec(cluster).await;
        let mut seen = seen.lock().unwrap();
        if spec.holder_identity.as_deref() == Some(holder)
            && let Some(renewed) = spec.renew_time
        {
            seen.insert(renewed.0);
        }
        // The first renewal seen, then `times` more.
        (seen.len() > times).then_some(())
    })
    .await
    .is_some()
}

/// Fill by watch: Secrets annotated while no webhook runs (or it is bypassed) are filled
/// within seconds, a changed annotation and a hand-edited token too, and opting out is
/// cleaned up. SIGTERM then exits 0 and releases the Lease.
async fn secrets_changed_behind_the_webhooks_back_are_filled_by_the_watch(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let mut serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    const FILL: Duration = Duration::from_secs(10);

    // Created with the annotation, straight to the API: no webhook.
    create_opted_in(&client, ns, "created", "123456789012/us-west-2").await;
    let created = secret_when(&cluster, "created", FILL, |s| has_password(s, US)).await;
    let created = created.unwrap_or_else(|| panic!("filled by the watch\n{}", serve.logs()));
    assert_eq!(created.metadata.labels.as_ref().unwrap()[MANAGED], "true");
    assert!(annotation(&created, FINGERPRINTS).is_some());
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()["team"],
        "a",
        "labels kept"
    );

    // Annotated later.
    create(
        &client,
        ns,
        &secret("later", DOCKER_CONFIG_JSON, &[], EMPTY),
    )
    .await;
    merge(
        &cluster,
        "later",
        json!({"metadata": {"annotations": {ANNOTATION: "123456789012/us-west-2"}}}),
    )
    .await;
    assert!(
        secret_when(&cluster, "later", FILL, |s| has_password(s, US))
            .await
            .is_some()
    );

    // The annotation changes: the new registry is filled, the old one kept.
    merge(&cluster, "created", json!({"metadata": {"annotations": {ANNOTATION: "123456789012/us-west-2,123456789012/eu-west-1"}}})).await;
    let both = secret_when(&cluster, "created", FILL, |s| has_password(s, EU)).await;
    let both = both.expect("the new registry filled");
    let us_password = password(&both, US);
    // Exactly the tokens ECR issued for each region.
    let us_issued = ecr.newest("us-west-2", None).expect("issued for us-west-2");
    let eu_issued = ecr.newest("eu-west-1", None).expect("issued for eu-west-1");
    assert_eq!(us_password, us_issued.password);
    assert_eq!(password(&both, EU), eu_issued.password);

    // A hand-edited token is replaced, though its recorded expiry is hours away.
    let mut config = dockerconfig(&both);
    config["auths"][US]["password"] = json!("garbage");
    config["auths"][US]["auth"] = json!(base64_of("AWS:garbage"));
    merge(
        &cluster,
        "created",
        json!({"data": {".dockerconfigjson": base64_of(&config.to_string())}}),
    )
    .await;
    // Waited for by the outcome itself: the token ECR issued, back in place of the edit.
    let mended = secret_when(&cluster, "created", FILL, |s| {
        has_password(s, US) && password(s, US) == us_issued.password
    })
    .await;
    let mended =
        mended.unwrap_or_else(|| panic!("the hand-edited token was replaced\n{}", serve.logs()));
    assert_eq!(
        password(&mended, US),
        us_issued.password,
        "with the cached token, the one ECR issued"
    );
    assert_eq!(
        password(&mended, EU),
        eu_issued.password,
        "EU left as it was"
    );

    // Opting out without the webhook: kubeecr's annotations and label go, the data stays.
    let before = secrets(&cluster).get("later").await.unwrap();
    merge(
        &cluster,
        "later",
        json!({"metadata": {"annotations": {ANNOTATION: null}}}),
    )
    .await;
    let released = secret_when(&cluster, "later", FILL, |s| {
        annotation(s, EXPIRES_AT).is_none()
            && s.metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(MANAGED))
    })
    .await;
    let released = released.expect("kubeecr's leftovers removed");
    assert!(annotation(&released, FINGERPRINTS).is_none());
    assert_eq!(released.data, before.data, "credentials left in place");

    // The API shows a write a moment before its outcome is counted.
    let metrics = eventually(Duration::from_secs(5), || async {
        let m = serve.metrics().await;
        sample_of(&m, "kubeecr_refreshes_total{outcome=\"released\"}")
            .filter(|n| *n >= 1.0)
            .map(|_| m)
    })
    .await
    .expect("the release counted");
    assert_eq!(sample_of(&metrics, "kubeecr_leader"), Some(1.0));
    assert!(
        sample_of(&metrics, "kubeecr_refreshes_total{outcome=\"refreshed\"}") >= Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        sample_of(&metrics, "kubeecr_refreshes_total{outcome=\"released\"}"),
        Some(1.0)
    );
    assert_eq!(ecr.token_calls().len(), 2, "one call per region");

    serve.signal(libc::SIGTERM);
    let status = serve.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", serve.logs());
    assert_eq!(lease_holder(&cluster).await, None, "the Lease was released");
    assert!(
        serve.logs().contains("released the Lease"),
        "{}",
        serve.logs()
    );
}
on_both_backends!(secrets_changed_behind_the_webhooks_back_are_filled_by_the_watch);

fn sample_of(metrics: &str, series: &str) -> Option<f64> {
    crate::serve_process::sample(metrics, series)
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Two replicas: exactly one leads and writes; after `kill -9` of the leader the other
/// takes the Lease over once it has run out, and fills new Secrets.
async fn one_leader_writes_and_the_other_takes_over_after_kill_9(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let a = ServeProcess::start(&cluster, &ecr.url(), "replica-a", FAST_LEASE).await;
    a.wait_ready().await;
    let led = a.leads_within(Duration::from_secs(15)).await;
    assert!(led, "the first replica leads\n{}", a.logs());
    let mut b = ServeProcess::start(&cluster, &ecr.url(), "replica-b", FAST_LEASE).await;
    b.wait_ready().await;
    // Two renewals by the leader while the follower runs: still exactly one leader.
    let renewed = renewals_by(&cluster, "replica-a", 2, Duration::from_secs(20)).await;
    assert!(renewed, "the leader renewed its Lease\n{}", a.logs());
    assert!(a.is_leader().await && !b.is_leader().await);
    assert_eq!(lease_holder(&cluster).await.as_deref(), Some("replica-a"));

    create_opted_in(&client, ns, "first", "123456789012/us-west-2").await;
    let filled = secret_when(&cluster, "first", Duration::from_secs(10), |s| {
        has_password(s, US)
    })
    .await;
    assert!(filled.is_some(), "filled by the leader\n{}", a.logs());
    let refreshed = "kubeecr_refreshes_total{outcome=\"refreshed\"}";
    let counted = eventually(Duration::from_secs(5), || async {
        (a.metric(refreshed).await == Some(1.0)).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the leader counted its write");
    assert_eq!(
        b.metric(refreshed).await,
        Some(0.0),
        "the follower never wrote"
    );

    let mut a = a;
    a.signal(libc::SIGKILL);
    a.exit(Duration::from_secs(10)).await;
    // The Lease as the killed leader left it: it renews no more.
    let left = lease_spec(&cluster).await;
    assert_eq!(left.holder_identity.as_deref(), Some("replica-a"));
    let took_over = b.leads_within(Duration::from_secs(30)).await;
    assert!(took_over, "the follower took over\n{}", b.logs());
    // The Lease changed hands once, to the follower, and only after it had run out: the
    // follower acquired it no sooner than the lease duration (4 s) after the last renewal.
    let taken = lease_spec(&cluster).await;
    assert_eq!(taken.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(
        taken.lease_transitions,
        Some(left.lease_transitions.unwrap_or(0) + 1),
        "one change of hands"
    );
    let last_renewal = left.renew_time.expect("renewed").0;
    let acquired = taken.acquire_time.expect("acquired").0;
    assert!(
        acquired >= last_renewal + Duration::from_secs(4),
        "taken over at {acquired}, before the lease renewed at {last_renewal} ran out"
    );

    create_opted_in(&client, ns, "second", "123456789012/us-west-2").await;
    let filled = secret_when(&cluster, "second", Duration::from_secs(10), |s| {
        has_password(s, US)
    })
    .await;
    assert!(filled.is_some(), "filled by the new leader\n{}", b.logs());
    let counted = eventually(Duration::from_secs(5), || async {
        (b.metric(refreshed).await == Some(1.0)).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the new leader counted its write");

    b.signal(libc::SIGTERM);
    assert!(
        b.exit(Duration::from_secs(30)).await.success(),
        "{}",
        b.logs()
    );
    assert_eq!(lease_holder(&cluster).await, None);
}
on_both_backends!(one_leader_writes_and_the_other_takes_over_after_kill_9);

/// The leader is killed with most of its writes still to do (writes slowed to 10/s): the
/// follower takes over, fills the rest, and no Secret's data is written twice, neither by the
/// two replicas nor by a write in flight at the kill.
async fn a_leader_killed_mid_refresh_leaves_nothing_undone_or_done_twice(cluster: TestCluster) {
    const SECRETS: usize = 40;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let names: Vec<String> = (0..SECRETS).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        create_opted_in(&client, ns, name, "123456789012/us-west-2").await;
    }
    let writes = DataWrites::start(&client, ns).await;
    let slow = [FAST_LEASE, &["--write-qps", "10", "--write-burst", "1"][..]].concat();
    let mut a = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &slow).await;
    a.wait_ready().await;
    assert!(
        a.leads_within(Duration::from_secs(15)).await,
        "{}",
        a.logs()
    );
    let b = ServeProcess::start(&cluster, &ecr.url(), "replica-b", &slow).await;
    b.wait_ready().await;

    let refreshed = "kubeecr_refreshes_total{outcome=\"refreshed\"}";
    let started = eventually(Duration::from_secs(20), || async {
        (a.metric(refreshed).await >= Some(8.0)).then_some(())
    })
    .await;
    assert!(
        started.is_some(),
        "the leader started writing\n{}",
        a.logs()
    );
    a.signal(libc::SIGKILL);
    a.exit(Duration::from_secs(10)).await;
    // What the leader wrote before the kill, as the API server holds it. The follower cannot
    // lead, nor write, before the Lease runs out.
    let list = secrets(&cluster)
        .list(&ListParams::default())
        .await
        .unwrap();
    let done_by_a = list.items.iter().filter(|s| has_password(s, US)).count();
    assert!(
        !b.is_leader().await,
        "counted before the follower could write"
    );
    assert!(done_by_a < SECRETS, "killed mid-refresh: {done_by_a} done");
    // The watch counting writes has seen each of those, once.
    writes.sync().await;
    assert_eq!(writes.counts().len(), done_by_a, "{:?}", writes.counts());

    assert!(
        b.leads_within(Duration::from_secs(15)).await,
        "{}",
        b.logs()
    );
    let all = eventually(Duration::from_secs(30), || async {
        let list = secrets(&cluster).list(&ListParams::default()).await.ok()?;
        let filled = list.items.iter().filter(|s| has_password(s, US)).count();
        (filled == SECRETS).then_some(())
    })
    .await;
    assert!(all.is_some(), "every Secret filled\n{}", b.logs());
    // The new leader is idle: every Secret filled as it sees them, none due or failing, so
    // no write is left to come. Then the watch counting writes catches up with the API.
    let idle = eventually(Duration::from_secs(30), || async {
        let m = b.metrics().await;
        let state = |s: &str| sample_of(&m, &format!("kubeecr_secrets{{state=\"{s}\"}}"));
        (state("filled") == Some(SECRETS as f64)
            && state("due") == Some(0.0)
            && state("failing") == Some(0.0))
        .then_some(())
    })
    .await;
    assert!(idle.is_some(), "the new leader settled\n{}", b.logs());
    writes.sync().await;
    let once: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 1)).collect();
    assert_eq!(writes.counts(), once, "{}", b.logs());
    let by_b = b.metric(refreshed).await.unwrap_or(0.0) as usize;
    assert_eq!(
        by_b,
        SECRETS - done_by_a,
        "the new leader wrote exactly the rest ({done_by_a} were done at the kill)"
    );
}
on_both_backends!(a_leader_killed_mid_refresh_leaves_nothing_undone_or_done_twice);

/// A Secret is refreshed when its recorded expiry comes within --refresh-before, and not
/// before: here the expiry is moved to 70 s away with a one-minute margin.
async fn tokens_are_renewed_before_they_expire(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "replica-a",
        &["--refresh-before", "1m"],
    )
    .await;
    serve.wait_ready().await;
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    let filled = secret_when(&cluster, "s", Duration::from_secs(10), |s| {
        has_password(s, US)
    })
    .await;
    let filled = filled.expect("filled");
    let first = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(password(&filled, US), first.password);
    assert_eq!(
        annotation(&filled, EXPIRES_AT).as_deref(),
        Some(first.expires_at.as_str()),
        "ECR's expiry"
    );

    // As if the token were 11h58m40s old: due 20 s from now, less up to 6 s of jitter (a
    // tenth of the margin).
    let expiring = jiff::Timestamp::now() + Duration::from_secs(80);
    let soon = kubeecr::contract::secret_update::format_expiry(expiring);
    let expiring: jiff::Timestamp = soon.parse().unwrap();
    merge(
        &cluster,
        "s",
        json!({"metadata": {"annotations": {EXPIRES_AT: soon}}}),
    )
    .await;
    let renewed = secret_when(&cluster, "s", Duration::from_secs(60), |s| {
        annotation(s, EXPIRES_AT).as_deref() != Some(soon.as_str())
    })
    .await;
    // Seen no sooner than it was written: the write came once the Secret was due (a minute
    // before its recorded expiry, less the jitter), not when the change was seen.
    let seen_at = jiff::Timestamp::now();
    let renewed = renewed.unwrap_or_else(|| panic!("refreshed once due\n{}", serve.logs()));
    let due = expiring - Duration::from_secs(60) - Duration::from_secs(6);
    assert!(
        seen_at >= due,
        "renewed by {seen_at}, before it was due at {due}"
    );
    // The renewal wrote the newest token ECR issued (the cached one: it has hours left),
    // with ECR's expiry for it.
    let newest = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(password(&renewed, US), newest.password, "the newest token");
    assert_eq!(
        annotation(&renewed, EXPIRES_AT).as_deref(),
        Some(newest.expires_at.as_str()),
        "the newest token's expiry"
    );
}
on_both_backends!(tokens_are_renewed_before_they_expire);

pub async fn events_for(cluster: &TestCluster, secret: &str) -> Vec<Event> {
    Api::<Event>::namespaced(cluster.client(), cluster.ns())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(secret))
        .collect()
}

/// A failing refresh leaves one Warning Event whose series counts the retries; the first
/// fill leaves a Normal one. No Event holds a credential.
async fn events_tell_what_happened_and_repeats_become_a_series(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    // ECR slower than kubeecr waits: every fetch fails until the delay is lifted.
    ecr.set_delay(Duration::from_secs(3));
    let client = cluster.client();
    let ns = cluster.ns();
    let serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "replica-a",
        &["--aws-timeout", "1s", "--min-fetch-interval", "1s"],
    )
    .await;
    serve.wait_ready().await;
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    let series = eventually(Duration::from_secs(20), || async {
        let events = events_for(&cluster, "s").await;
        let failed: Vec<&Event> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("RefreshFailed"))
            .collect();
        let counted = failed.len() == 1 && failed[0].series.as_ref().is_some_and(|s| s.count >= 2);
        counted.then(|| failed[0].clone())
    })
    .await;
    let failed =
        series.unwrap_or_else(|| panic!("one RefreshFailed Event with a series\n{}", serve.logs()));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let note = failed.note.clone().unwrap_or_default();
    // Events are read in the Secret's namespace: a short reason, no endpoint, no SDK chain.
    assert_eq!(note, "ECR did not answer in time for us-west-2");
    assert_eq!(
        failed.reporting_controller.as_deref(),
        Some("kubeecr.deft.com/kubeecr")
    );
    assert_eq!(failed.reporting_instance.as_deref(), Some("replica-a"));

    ecr.set_delay(Duration::ZERO);
    let filled = secret_when(&cluster, "s", Duration::from_secs(20), |s| {
        has_password(s, US)
    })
    .await;
    let filled = filled.unwrap_or_else(|| panic!("filled once ECR answers\n{}", serve.logs()));
    let normal = eventually(Duration::from_secs(10), || async {
        events_for(&cluster, "s")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Filled"))
    })
    .await;
    let normal = normal.expect("a Filled Event");
    assert_eq!(normal.type_.as_deref(), Some("Normal"));
    let pw = password(&filled, US);
    for e in events_for(&cluster, "s").await {
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains(&pw), "no password in an Event: {text}");
    }
}
on_both_backends!(events_tell_what_happened_and_repeats_become_a_series);

/// An opted-in Secret that is immutable (made before kubeecr's webhook, or with it down) is
/// skipped: one Warning Event however many passes, no write, no ECR call.
async fn an_immutable_secret_is_skipped_with_one_warning(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let foreign = br#"{"auths":{"quay.io":{"auth":"cTp4"}}}"#;
    let frozen = immutable_secret("frozen", Some("123456789012/us-west-2"), foreign);
    secrets(&cluster)
        .create(&PostParams::default(), &frozen)
        .await
        .unwrap();
    let serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "replica-a",
        &["--resync-interval", "1s"],
    )
    .await;
    serve.wait_ready().await;
    let warned = eventually(Duration::from_secs(15), || async {
        events_for(&cluster, "frozen")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NotFilled"))
    })
    .await;
    let warned = warned.unwrap_or_else(|| panic!("a NotFilled Event\n{}", serve.logs()));
    assert_eq!(warned.type_.as_deref(), Some("Warning"));
    let note = warned.note.unwrap_or_default();
    assert!(note.contains("immutable"), "{note}");
    // More passes over it: each label edit is a change its watch delivers and kubeecr
    // decides on again (besides the resyncs every second).
    for n in 0..3 {
        merge(
            &cluster,
            "frozen",
            json!({"metadata": {"labels": {"pass": n.to_string()}}}),
        )
        .await;
    }
    // A Secret opted in after the edits, through the same watch: once it is filled, every
    // earlier change was decided on.
    create_opted_in(
        &cluster.client(),
        cluster.ns(),
        "after",
        "123456789012/eu-west-1",
    )
    .await;
    let after = secret_when(&cluster, "after", Duration::from_secs(15), |s| {
        has_password(s, EU)
    })
    .await;
    assert!(after.is_some(), "the later Secret filled\n{}", serve.logs());
    // Still the one Event, and the Secret as it was.
    let events = events_for(&cluster, "frozen").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].series.is_none(), "{events:?}");
    let now = secrets(&cluster).get("frozen").await.unwrap();
    assert_eq!(now.data.unwrap()[".dockerconfigjson"].0, foreign);
    let calls = ecr.token_calls();
    assert!(
        calls.iter().all(|c| c.region == "eu-west-1"),
        "no token fetched for it: {calls:?}"
    );
}

on_both_backends!(an_immutable_secret_is_skipped_with_one_warning);

/// SIGTERM while clients keep the webhook busy: `/readyz` turns 503 while it keeps serving
/// for the shutdown delay; then every request that reaches kubeecr is answered in full, new
/// connections are refused once it stops listening, it exits 0 and the Lease is free.
async fn sigterm_under_admission_load_fails_no_request(cluster: TestCluster) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use kubeecr_testkit::tls::{Alpn, https_client};

    let ecr = EcrProxy::start().await;
    let mut serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "replica-a",
        &["--shutdown-delay", "2s"],
    )
    .await;
    serve.wait_ready().await;
    let led = serve.leads_within(Duration::from_secs(15)).await;
    assert!(led);
    let (_, review) = fixture_in(
        "01-create-annotated-nodata-apply-mutate-create.json",
        cluster.ns(),
    );
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let url = format!("https://127.0.0.1:{}/mutate?timeout=5s", serve.webhook_port);
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    // Per client: requests answered, and refused (not listening any more).
    let answers: Vec<Arc<AtomicU32>> = (0..8).map(|_| Default::default()).collect();
    let refusals: Vec<Arc<AtomicU32>> = (0..8).map(|_| Default::default()).collect();
    // HTTP/2, as the API server speaks to webhooks: GOAWAY tells a client what was served.
    for (answered, refusals) in answers.iter().zip(&refusals) {
        let https = https_client(serve.ca.pem().as_bytes(), Alpn::Http2);
        let (url, body, stop) = (url.clone(), body.clone(), stop.clone());
        let (answered, refusals) = (answered.clone(), refusals.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut failed) = (0u32, 0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                match https.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        let bytes = res.into_body().collect().await.map(|b| b.to_bytes());
                        match bytes
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        {
                            Some(v) if v["response"]["allowed"] == true => {
                                ok += 1;
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failed.push(format!("bad answer: {other:?}")),
                        }
                    }
                    Ok(res) => failed.push(format!("status {}", res.status())),
                    // Not listening any more: the request never reached kubeecr.
                    Err(e) if e.is_connect() => {
                        refused += 1;
                        refusals.fetch_add(1, Ordering::SeqCst);
                        // A client's pause before it tries again, as the API server's.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, refused, failed)
        }));
    }
    // The load runs: every client has had answers.
    let all = |counts: &[Arc<AtomicU32>], at_least| {
        counts.iter().all(|n| n.load(Ordering::SeqCst) >= at_least)
    };
    let loaded = eventually(Duration::from_secs(30), || async {
        all(&answers, 5).then_some(())
    })
    .await;
    assert!(
        loaded.is_some(),
        "every client was answered\n{}",
        serve.logs()
    );
    serve.signal(libc::SIGTERM);
    let unready = eventually(Duration::from_secs(2), || async {
        (serve.readyz().await == Some(503)).then_some(())
    })
    .await;
    assert!(unready.is_some(), "not ready during the shutdown delay");
    let status = serve.exit(Duration::from_secs(30)).await;
    // Every client outlived the server: each has found it no longer listening.
    let outlived = eventually(Duration::from_secs(10), || async {
        all(&refusals, 1).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut refused, mut failed) = (0, 0, Vec::new());
    for c in clients {
        let (o, r, f) = c.await.unwrap();
        ok += o;
        refused += r;
        failed.extend(f);
    }
    assert!(status.success(), "{status:?}\n{}", serve.logs());
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        outlived.is_some(),
        "every client outlived the server: {refused} refused, {ok} answered"
    );
    assert_eq!(lease_holder(&cluster).await, None, "the Lease was released");
}
on_both_backends!(sigterm_under_admission_load_fails_no_request);

/// `/readyz` and `/metrics` tell the truth: leader, Secrets by state, ECR calls and token
/// expiry, refreshes, admission requests, build info.
async fn the_admin_port_tells_the_truth(cluster: TestCluster) {
    use bytes::Bytes;
    use http_body_util::Full;
    use kubeecr_testkit::tls::{Alpn, https_client};

    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    assert_eq!(
        crate::serve_process::http_get(serve.admin_port, "/livez")
            .await
            .map(|r| r.0),
        Some(200)
    );
    create_opted_in(&client, ns, "good", "123456789012/us-west-2").await;
    create_opted_in(&client, ns, "bad", "123456789/us-west-2").await;
    assert!(
        secret_when(&cluster, "good", Duration::from_secs(10), |s| has_password(
            s, US
        ))
        .await
        .is_some()
    );
    let https = https_client(serve.ca.pem().as_bytes(), Alpn::Both);
    let (_, review) = fixture_in(
        "09-create-malformed-annotation-mutate-create.json",
        cluster.ns(),
    );
    let req = http::Request::post(format!("https://127.0.0.1:{}/mutate", serve.webhook_port))
        .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
        .unwrap();
    assert_eq!(https.request(req).await.unwrap().status(), 200);

    let counted = eventually(Duration::from_secs(10), || async {
        let m = serve.metrics().await;
        (sample_of(&m, "kubeecr_secrets{state=\"filled\"}") == Some(1.0)
            && sample_of(&m, "kubeecr_secrets{state=\"invalid\"}") == Some(1.0))
        .then_some(m)
    })
    .await;
    let m = counted.unwrap_or_else(|| {
        panic!(
            "states counted\n{}",
            futures::executor::block_on(serve.metrics())
        )
    });
    assert_eq!(sample_of(&m, "kubeecr_leader"), Some(1.0));
    assert_eq!(
        sample_of(
            &m,
            "kubeecr_ecr_calls_total{region=\"us-west-2\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    let expiry = sample_of(
        &m,
        "kubeecr_token_expiry_timestamp_seconds{principal=\"default\",region=\"us-west-2\"}",
    )
    .unwrap();
    assert!(expiry > (jiff::Timestamp::now().as_second() + 11 * 3600) as f64);
    assert_eq!(
        sample_of(&m, "kubeecr_refreshes_total{outcome=\"refreshed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample_of(&m, "kubeecr_refreshes_total{outcome=\"skipped\"}"),
        Some(0.0),
        "invalid ones are not even read"
    );
    assert_eq!(
        sample_of(
            &m,
            "kubeecr_admission_requests_total{webhook=\"mutate\",operation=\"CREATE\",result=\"denied\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_of(
            &m,
            "kubeecr_admission_duration_seconds_count{webhook=\"mutate\"}"
        ),
        Some(1.0)
    );
    assert!(m.contains("kubeecr_build_info{version=\""), "{m}");
    // No label names a Secret or a namespace.
    assert!(!m.contains(ns) && !m.contains("\"good\""), "{m}");
}
on_both_backends!(the_admin_port_tells_the_truth);

/// Trace logging through a fill at admission, a fill and a refresh by the watch, and a
/// failure: no password, auth or AWS secret key in any line. `RUST_LOG=trace` turns on
/// everything; the SDK's wire targets stay capped at debug.
async fn no_credential_reaches_the_logs_even_at_trace(cluster: TestCluster) {
    leaks_nothing_with(cluster, &[("RUST_LOG", "trace")], &[]).await;
}
on_both_backends!(no_credential_reaches_the_logs_even_at_trace);

/// The filter of the report that found the token in a log: info, with the SDK's runtime
/// (which logs response bodies at trace) and the HTTP client asked for at trace.
#[tokio::test]
async fn no_credential_reaches_the_logs_with_sdk_targets_at_trace() {
    let cluster = TestCluster::double().await;
    let filter = "info,aws_smithy_runtime=trace,aws_smithy_http_client=trace,hyper_util=trace";
    let logs = leaks_nothing_with(cluster, &[], &["--log-level", filter]).await;
    assert!(
        logs.contains("aws_smithy_runtime"),
        "the SDK's debug lines are kept"
    );
}

async fn leaks_nothing_with(cluster: TestCluster, env: &[(&str, &str)], flags: &[&str]) -> String {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use kubeecr_testkit::tls::{Alpn, https_client};

    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let mut extra = vec!["--aws-timeout", "1s", "--min-fetch-interval", "1s"];
    extra.extend_from_slice(flags);
    let ports = crate::serve_process::Ports::new();
    let mut cmd = ServeProcess::command(&ports, &cluster, &ecr.url(), "replica-a", &extra);
    cmd.envs(env.iter().copied());
    let mut serve = ServeProcess::launch(cmd, ports);
    serve.wait_ready().await;
    // Admission.
    let https = https_client(serve.ca.pem().as_bytes(), Alpn::Both);
    let (_, review) = fixture_in(
        "01-create-annotated-nodata-apply-mutate-create.json",
        cluster.ns(),
    );
    let req = http::Request::post(format!("https://127.0.0.1:{}/mutate", serve.webhook_port))
        .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
        .unwrap();
    let answer = https
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&answer).contains("\"patch\""));
    // Fill and refresh by the watch.
    create_opted_in(
        &client,
        ns,
        "s",
        "123456789012/us-west-2,123456789012/eu-west-1",
    )
    .await;
    let filled = secret_when(&cluster, "s", Duration::from_secs(10), |s| {
        has_password(s, EU)
    })
    .await
    .expect("filled");
    merge(
        &cluster,
        "s",
        json!({"metadata": {"annotations": {EXPIRES_AT: "2020-01-01T00:00:00Z"}}}),
    )
    .await;
    secret_when(&cluster, "s", Duration::from_secs(10), |s| {
        annotation(s, EXPIRES_AT).as_deref() != Some("2020-01-01T00:00:00Z")
    })
    .await
    .expect("refreshed");
    // A failure: ECR too slow for a new region.
    ecr.set_delay(Duration::from_secs(3));
    create_opted_in(&client, ns, "f", "123456789012/eu-central-1").await;
    let failed = eventually(Duration::from_secs(15), || async {
        serve
            .logs()
            .contains("ECR token for eu-central-1")
            .then_some(())
    })
    .await;
    assert!(failed.is_some(), "the failure was logged");
    serve.signal(libc::SIGTERM);
    serve.exit(Duration::from_secs(30)).await;

    let logs = serve.logs();
    // Verbose logging was on: the SDK's own lines (debug, the most its targets ever log).
    assert!(
        logs.lines()
            .any(|l| l.contains("DEBUG") && l.contains("aws_smithy")),
        "the AWS SDK's debug lines are in the log"
    );
    let config = dockerconfig(&filled);
    for host in [US, EU] {
        let entry = &config["auths"][host];
        for field in ["password", "auth"] {
            let secret = entry[field].as_str().unwrap();
            assert!(!logs.contains(secret), "{field} of {host} logged");
        }
    }
    // Every token ECR handed out, whichever Secret or admission it went to.
    let issued = ecr.issued();
    assert!(issued.len() >= 2, "{} tokens issued", issued.len());
    for token in issued {
        assert!(!logs.contains(&token.password), "a password logged");
    }
    assert!(!logs.contains(CLI_SECRET_KEY), "the AWS secret key logged");
    assert!(
        !logs.contains("authorizationToken"),
        "a raw ECR response logged"
    );
    logs
}
