//! Shared clusters: one team cannot get a token for another team's registry, or use kubeecr's
//! own AWS identity where the operator did not allow it. Refused at admission, skipped by the
//! refresher with an Event, and shown by `kubeecr status`, each naming the namespace, the
//! registry and the flag to change.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::json;

use crate::common::*;
use crate::install_scenario::{ClusterScoped, kubectl, list_of, object_name, render_for_test};
use crate::on_both_backends;
use crate::serve_process::{ServeProcess, eventually, secret_when};
use crate::serve_scenarios::events_for;
use crate::webhook_flow::{api_message, loopback_reachable, register};

const TEAM_A: &str = "111111111111/us-west-2";
const TEAM_A_HOST: &str = "111111111111.dkr.ecr.us-west-2.amazonaws.com";
const TEAM_B: &str = "222222222222/us-west-2";
const TEAM_B_HOST: &str = "222222222222.dkr.ecr.us-west-2.amazonaws.com";
const TEAM_B_ROLE: &str = "arn:aws:iam::222222222222:role/ecr-team-b";

fn opted_in(name: &str, registries: &str, role: Option<&str>) -> Secret {
    let mut annotations = vec![(ANNOTATION, registries)];
    if let Some(role) = role {
        annotations.push(("deft.com/kubeecr-role", role));
    }
    secret(name, DOCKER_CONFIG_JSON, &annotations, EMPTY)
}

/// The test's namespace plays team B. kubeecr's own identity serves no namespace, team B may
/// use its role and its account's registries, team A another account's.
async fn a_team_cannot_take_another_teams_registry(cluster: TestCluster) {
    if !loopback_reachable(&cluster, "a_team_cannot_take_another_teams_registry") {
        return;
    }
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let registries = format!("--allowed-registries=team-a=111111111111/*,{ns}=222222222222/*");
    let roles = format!("--allowed-role-arns={ns}={TEAM_B_ROLE}");
    let sts = format!("--sts-endpoint={}", ecr.url());
    let flags = [
        registries.as_str(),
        roles.as_str(),
        "--own-identity-namespaces=none",
    ];
    // Made behind the webhook's back (before it was installed): only the refresher sees them.
    let early = [
        ("early-registry", TEAM_A, Some(TEAM_B_ROLE)),
        ("early-identity", TEAM_B, None),
    ];
    for (name, registries, role) in early {
        create(&client, ns, &opted_in(name, registries, role)).await;
    }
    let serve_flags: Vec<&str> = flags.iter().copied().chain([sts.as_str()]).collect();
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &serve_flags).await;
    serve.wait_ready().await;
    let webhook = format!("https://127.0.0.1:{}", serve.webhook_port);
    let _registration = register(&cluster, &webhook, &serve.ca.pem()).await;

    let registry_refusal = format!(
        "deft.com/kubeecr: registry {TEAM_A} is not allowed in this namespace; use one that --allowed-registries allows here (222222222222/*), or ask kubeecr's operator"
    );
    let identity_refusal = format!(
        "deft.com/kubeecr: {TEAM_B} needs a role, since kubeecr's own AWS identity does not serve this namespace (--own-identity-namespaces); name one in deft.com/kubeecr-role that --allowed-role-arns allows here ({TEAM_B_ROLE})"
    );
    // At admission: refused, with the namespace, the registry and the flag.
    for (name, registries, role, refusal) in [
        ("stolen", TEAM_A, Some(TEAM_B_ROLE), &registry_refusal),
        ("no-role", TEAM_B, None, &identity_refusal),
    ] {
        let err = api
            .create(&PostParams::default(), &opted_in(name, registries, role))
            .await
            .expect_err("refused");
        assert_eq!(
            api_message(err),
            format!(
                "admission webhook \"mutate.kubeecr.deft.com\" denied the request: {ns}/{name}: {refusal}"
            )
        );
    }
    // Team B's own registry, with its role: filled with the token ECR issued to that role.
    create(&client, ns, &opted_in("own", TEAM_B, Some(TEAM_B_ROLE))).await;
    let own = get(&client, ns, "own").await;
    let issued = ecr
        .newest("us-west-2", Some(TEAM_B_ROLE))
        .expect("a token for the role");
    assert_eq!(
        password_of(&dockerconfig(&own), TEAM_B_HOST),
        issued.password
    );

    // The refresher: one NotFilled Event each, with the same reason; nothing written.
    for (name, refusal) in [
        ("early-registry", &registry_refusal),
        ("early-identity", &identity_refusal),
    ] {
        let note = eventually(Duration::from_secs(15), || async {
            events_for(&cluster, name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("NotFilled"))
                .and_then(|e| e.note)
        })
        .await;
        let note = note.unwrap_or_else(|| panic!("a NotFilled Event for {name}\n{}", serve.logs()));
        assert_eq!(&note, refusal, "{name}");
        let held = get(&client, ns, name).await;
        assert_eq!(
            data_bytes(&held, ".dockerconfigjson").unwrap(),
            br#"{"auths":{}}"#
        );
    }
    // `kubeecr status` with the same flags: invalid, for the same reason.
    let out = kubeecr_command("status")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", ns, "-o", "json"])
        .args(flags)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        status["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {status:#}"))
    };
    assert_eq!(row("early-registry")["state"], "invalid");
    assert_eq!(row("early-registry")["reason"], json!(registry_refusal));
    assert_eq!(row("early-identity")["reason"], json!(identity_refusal));
    assert_eq!(row("own")["state"], "filled");
    // The only tokens fetched were team B's, as its role; none reached team A's host.
    assert!(
        ecr.issued()
            .iter()
            .all(|i| i.role.as_deref() == Some(TEAM_B_ROLE))
    );
    for name in ["early-registry", "early-identity", "own"] {
        let s = get(&client, ns, name).await;
        assert!(
            dockerconfig(&s)["auths"].get(TEAM_A_HOST).is_none(),
            "{name}"
        );
    }
    let filled = secret_when(&cluster, "own", Duration::from_secs(1), |s| {
        annotation(s, FINGERPRINTS).is_some()
    })
    .await;
    assert!(filled.is_some());
}
on_both_backends!(a_team_cannot_take_another_teams_registry);

/// The peak resident memory of a process so far, in MiB: the kernel's high-water mark of its
/// memory since its exec (`VmHWM`), so the test process it was spawned from does not count.
pub fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Waits for `child`, reading its high-water mark until it exits: the last reading is its peak
/// but for what it took in its last few milliseconds.
fn wait_with_peak(mut child: std::process::Child) -> (std::process::ExitStatus, u64) {
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        peak = peak.max(peak_rss_mib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The largest peak a kubeecr process (a debug build, larger than the release) may reach
/// here, whatever the Secrets beside the ones it serves hold: about 50 MiB is seen. Before
/// the fix, the release build took 386 MiB for `refresh` and 353 MiB for `serve` over these
/// Secrets (BENCHMARKS.md).
const MAX_PEAK_MIB: u64 = 96;

/// Tenant Secrets of 750 KB in the namespace kubeecr serves: labelled without opting in (as
/// the finding made them), and (one in ten) opted in with 750 KB in their own
/// `.dockerconfigjson`, which kubeecr must read whole to fill.
async fn big_tenant_secrets(cluster: &TestCluster, count: usize) {
    let client = cluster.client();
    let ns = cluster.ns();
    let blob = vec![b'x'; 768_000];
    let padded = format!(r#"{{"auths":{{}},"pad":"{}"}}"#, "x".repeat(768_000));
    let jobs = (0..count).map(|i| {
        let client = client.clone();
        let (blob, padded) = (blob.clone(), padded.clone());
        async move {
            let mut s = if i % 10 == 0 {
                secret(
                    &format!("opted-in-{i}"),
                    DOCKER_CONFIG_JSON,
                    &[(ANNOTATION, "123456789012/us-west-2")],
                    &[(".dockerconfigjson", padded.as_bytes())],
                )
            } else {
                secret(&format!("big-{i}"), "Opaque", &[], &[("padding", &blob)])
            };
            s.metadata
                .labels
                .get_or_insert_default()
                .insert(MANAGED.into(), "true".into());
            create(&client, ns, &s).await;
        }
    });
    futures::future::join_all(jobs).await;
}

/// The finding: 120 labelled Secrets of 750 KB took `kubeecr refresh` to 288 MiB, past the
/// CronJob's limit, so it was killed at every run and every token expired. Now each is read
/// as it arrives and its other keys skipped: the pass succeeds within a small bound, fills
/// the opted-in ones, and takes the label off the others.
async fn big_labelled_secrets_neither_stop_nor_bloat_refresh(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let ns = cluster.ns();
    big_tenant_secrets(&cluster, 120).await;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kubeecr"))
        .arg("refresh")
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "AKIAKUBEECRCLI000001")
        .env("AWS_SECRET_ACCESS_KEY", CLI_SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args([
            "--namespace",
            ns,
            "--ecr-endpoint",
            &ecr.url(),
            "--log-level",
            "warn",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, peak) = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
            out
        });
        let (status, peak) = wait_with_peak(child);
        (status, peak, reader.join().unwrap())
    })
    .await
    .map(|(status, peak, out)| {
        assert!(
            out.contains(
                "refreshed 12, unchanged 0, released 108, skipped 0, failed 0; ECR calls 1"
            ),
            "{out}"
        );
        (status, peak)
    })
    .unwrap();
    println!("kubeecr refresh over 120 Secrets of 750 KB: peak RSS {peak} MiB");
    assert!(status.success(), "{status}");
    assert!((1..=MAX_PEAK_MIB).contains(&peak), "peak RSS {peak} MiB");
    let client = cluster.client();
    let filled = get(&client, ns, "opted-in-0").await;
    let issued = ecr.newest("us-west-2", None).unwrap();
    assert_eq!(
        password_of(
            &dockerconfig(&filled),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        ),
        issued.password
    );
    let config = dockerconfig(&filled);
    assert_eq!(
        config["pad"].as_str().unwrap().len(),
        768_000,
        "the rest of the config kept"
    );
    let released = get(&client, ns, "big-1").await;
    assert!(
        !released
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key(MANAGED)
    );
}
on_both_backends!(big_labelled_secrets_neither_stop_nor_bloat_refresh);

/// The same Secrets as `kubeecr serve` lists and watches them: every replica lists them at
/// start, and stays within the bound.
async fn big_labelled_secrets_do_not_bloat_serve(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    big_tenant_secrets(&cluster, 120).await;
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    let filled = secret_when(&cluster, "opted-in-0", Duration::from_secs(20), |s| {
        annotation(s, FINGERPRINTS).is_some()
    })
    .await;
    assert!(filled.is_some(), "filled\n{}", serve.logs());
    let peak = peak_rss_mib(serve.pid() as u32).unwrap();
    println!("kubeecr serve over 120 Secrets of 750 KB: peak RSS {peak} MiB");
    assert!(peak <= MAX_PEAK_MIB, "peak RSS {peak} MiB");
}
on_both_backends!(big_labelled_secrets_do_not_bloat_serve);

/// The ValidatingAdmissionPolicy of `manifests/`, on the real kube-apiserver (the double runs
/// no CEL): a tenant cannot label a Secret it does not opt in, nor put kubeecr's annotations
/// on one, while kubeecr's ServiceAccount can, and opting in still works.
#[tokio::test]
async fn only_kubeecr_sets_its_label_and_annotations() {
    let Some(cluster) = TestCluster::real("only_kubeecr_sets_its_label_and_annotations").await
    else {
        return;
    };
    let ns = cluster.ns().to_string();
    let admin = cluster.client();
    let _policy = policy_in(&cluster);
    let sa = format!("system:serviceaccount:{ns}:kubeecr");
    let tenant = writer_as(&cluster, "tenant-a");
    let kubeecr = writer_as(&cluster, &sa);
    let as_tenant: Api<Secret> = Api::namespaced(tenant, &ns);
    let as_kubeecr: Api<Secret> = Api::namespaced(kubeecr, &ns);
    let labelled = |name: &str| {
        let mut s = secret(name, "Opaque", &[], &[("padding", b"x")]);
        s.metadata
            .labels
            .get_or_insert_default()
            .insert(MANAGED.into(), "true".into());
        s
    };
    // The API server picks a new policy up within moments: wait for the first refusal.
    let refused = eventually(Duration::from_secs(20), || async {
        match as_tenant
            .create(&PostParams::default(), &labelled("probe"))
            .await
        {
            Err(e) => Some(api_message(e)),
            Ok(_) => {
                let _ = as_tenant.delete("probe", &Default::default()).await;
                None
            }
        }
    })
    .await
    .expect("the policy refuses a tenant's label");
    assert!(
        refused.contains("the label deft.com/kubeecr-managed is kubeecr's: only kubeecr sets it, on a Secret that opts in with the annotation deft.com/kubeecr"),
        "{refused}"
    );
    // Added later by a patch: refused too.
    create(&admin, &ns, &secret("plain", "Opaque", &[], &[("k", b"v")])).await;
    let label = kube::api::Patch::Merge(json!({"metadata": {"labels": {MANAGED: "true"}}}));
    let err = as_tenant
        .patch("plain", &Default::default(), &label)
        .await
        .unwrap_err();
    assert!(api_message(err).contains("the label deft.com/kubeecr-managed is kubeecr's"));
    let own = kube::api::Patch::Merge(
        json!({"metadata": {"annotations": {EXPIRES_AT: "2099-01-01T00:00:00Z"}}}),
    );
    let err = as_tenant
        .patch("plain", &Default::default(), &own)
        .await
        .unwrap_err();
    assert!(api_message(err).contains("deft.com/kubeecr-fingerprints are kubeecr's"));
    // kubeecr's ServiceAccount may; and a tenant may take it off again.
    as_kubeecr
        .patch("plain", &Default::default(), &label)
        .await
        .expect("kubeecr labels");
    let unlabel = kube::api::Patch::Merge(json!({"metadata": {"labels": {MANAGED: null}}}));
    as_tenant
        .patch("plain", &Default::default(), &unlabel)
        .await
        .expect("a tenant removes it");
    // Opting in, as the webhook leaves it (labelled), is a tenant's own business.
    let mut opted = opted_in("opted", TEAM_A, None);
    opted
        .metadata
        .labels
        .get_or_insert_default()
        .insert(MANAGED.into(), "true".into());
    as_tenant
        .create(&PostParams::default(), &opted)
        .await
        .expect("an opted-in Secret");
    let huge = kube::api::Patch::Merge(
        json!({"metadata": {"annotations": {FINGERPRINTS: "x".repeat(5000)}}}),
    );
    let err = as_tenant
        .patch("opted", &Default::default(), &huge)
        .await
        .unwrap_err();
    assert!(api_message(err).contains("longer than kubeecr ever writes"));
}

/// The policy and binding of the install, as rendered for the test's namespace (so that its
/// ServiceAccount is the one exempted), bound to that namespace only: the real API server is
/// shared with the other tests. Removed when dropped.
fn policy_in(cluster: &TestCluster) -> ClusterScoped {
    let ns = cluster.ns();
    let mut docs = render_for_test(ns);
    docs.retain(|d| {
        d["kind"]
            .as_str()
            .unwrap()
            .starts_with("ValidatingAdmissionPolicy")
    });
    assert_eq!(docs.len(), 2);
    for doc in &mut docs {
        if doc["kind"] == "ValidatingAdmissionPolicyBinding" {
            doc["spec"]["matchResources"] = json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
            });
        }
    }
    let admin = cluster.kubeconfig();
    let guard = ClusterScoped {
        kubeconfig: admin.to_path_buf(),
        objects: docs.iter().map(object_name).collect(),
    };
    kubectl(
        admin,
        &["apply", "-f", "-"],
        &list_of(&docs.iter().collect::<Vec<_>>()),
    )
    .unwrap();
    guard
}

/// A client acting as `user`, who may write Secrets in the test's namespace (RBAC), and
/// nothing else.
fn writer_as(cluster: &TestCluster, user: &str) -> kube::Client {
    let ns = cluster.ns();
    let name = format!("secret-writer-{}", user.replace([':', '.'], "-"));
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "update", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]});
    kubectl(
        cluster.kubeconfig(),
        &["apply", "-f", "-"],
        &rbac.to_string(),
    )
    .unwrap();
    let mut config = cluster.config().clone();
    config.auth_info.impersonate = Some(user.to_string());
    kube::Client::try_from(config).unwrap()
}

/// The finding: 512 idle TCP connections, before any TLS handshake, held every slot of the
/// webhook port for 10 s each, and the API server's calls waited behind them. Now an address
/// holds at most its share, a handshake must come within 3 s, and a new connection is never
/// kept from its handshake: with 600 connections from one address kept open (each reopened
/// as soon as kubeecr closes it), the API server's `kubectl apply` of an opted-in Secret is
/// filled at admission.
async fn idle_connections_from_one_address_do_not_block_admission(cluster: TestCluster) {
    if !loopback_reachable(
        &cluster,
        "idle_connections_from_one_address_do_not_block_admission",
    ) {
        return;
    }
    let ecr = EcrProxy::start().await;
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    let webhook = format!("127.0.0.1:{}", serve.webhook_port);
    let _registration = register(&cluster, &format!("https://{webhook}"), &serve.ca.pem()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let attackers: Vec<_> = (0..600)
        .map(|_| {
            let (stop, webhook) = (stop.clone(), webhook.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                    let Ok(mut conn) = socket.connect(webhook.parse().unwrap()).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let mut buf = [0u8; 64];
                    tokio::select! {
                        _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf) => {}
                        () = stop.cancelled() => {}
                    }
                }
            })
        })
        .collect();
    let refused = |reason: &'static str| {
        let serve = &serve;
        async move {
            serve
                .metric(&format!(
                    "kubeecr_http_refused_total{{server=\"webhook\",reason=\"{reason}\"}}"
                ))
                .await
                .unwrap_or(0.0)
        }
    };
    // The attack is on: most of the 600 were closed at once, past the address's share.
    let on = eventually(Duration::from_secs(20), || async {
        (refused("peer_limit").await >= 500.0).then_some(())
    })
    .await;
    assert!(
        on.is_some(),
        "the attacker's address was held to its share\n{}",
        serve.logs()
    );

    let manifest = serde_json::to_string(&opted_in("under-attack", TEAM_B, None)).unwrap();
    let applied = tokio::task::spawn_blocking({
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        let ns = cluster.ns().to_string();
        // No client-side schema check: the API double serves no OpenAPI.
        move || {
            kubectl(
                &kubeconfig,
                &["apply", "--validate=false", "-n", &ns, "-f", "-"],
                &manifest,
            )
        }
    })
    .await
    .unwrap();
    stop.cancel();
    for attacker in attackers {
        attacker.await.unwrap();
    }
    applied.unwrap_or_else(|e| panic!("{e}\n{}", serve.logs()));
    let created = get(&cluster.client(), cluster.ns(), "under-attack").await;
    let issued = ecr.newest("us-west-2", None).expect("filled at admission");
    assert_eq!(
        password_of(&dockerconfig(&created), TEAM_B_HOST),
        issued.password
    );
}
on_both_backends!(idle_connections_from_one_address_do_not_block_admission);

/// The finding: without mTLS, a review POSTed straight to the webhook port made kubeecr write
/// a `Filled` Event into any namespace it named, `kube-system` included, and flood the
/// shared Event queue. Now the Event of a fill at admission waits until the Secret is stored
/// as reviewed: a forged review writes none (it is counted), a real create still gets one.
async fn forged_reviews_write_no_events(cluster: TestCluster) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use kubeecr_testkit::tls::{Alpn, https_client};

    if !loopback_reachable(&cluster, "forged_reviews_write_no_events") {
        return;
    }
    let ecr = EcrProxy::start().await;
    let ns = cluster.ns();
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &[]).await;
    serve.wait_ready().await;
    let (_, mut review) = fixture_in("01-create-annotated-nodata-apply-mutate-create.json", ns);
    review["request"]["name"] = json!("forged");
    review["request"]["object"]["metadata"]["name"] = json!("forged");
    let https = https_client(serve.ca.pem().as_bytes(), Alpn::Http2);
    let post = http::Request::post(format!("https://127.0.0.1:{}/mutate", serve.webhook_port))
        .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
        .unwrap();
    let answer = https
        .request(post)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&answer.to_bytes()).contains("\"patch\""));

    let webhook = format!("https://127.0.0.1:{}", serve.webhook_port);
    let _registration = register(&cluster, &webhook, &serve.ca.pem()).await;
    create(&cluster.client(), ns, &opted_in("real", TEAM_B, None)).await;
    let filled = eventually(Duration::from_secs(15), || async {
        events_for(&cluster, "real")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Filled"))
    })
    .await;
    assert!(
        filled.is_some(),
        "the stored Secret's Event\n{}",
        serve.logs()
    );
    // The forged one was checked first (the queue is in order) and let go.
    assert_eq!(
        serve.metric("kubeecr_events_unconfirmed_total").await,
        Some(1.0),
        "{}",
        serve.logs()
    );
    assert!(events_for(&cluster, "forged").await.is_empty());
}
on_both_backends!(forged_reviews_write_no_events);
