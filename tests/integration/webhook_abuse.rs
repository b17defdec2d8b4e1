//! Clients that hold the webhook (and the admin port) without finishing a request: slow
//! bodies, dribbled headers, silent connections, too many connections, requests or body
//! bytes. Real TLS on loopback, short bounds, no AWS: /validate decides from the review alone
//! and /mutate only adds the placeholder (`fill: false`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use kubeecr::contract::policy::Policy;
use kubeecr::servers::http::ServerSettings;
use kubeecr::servers::limits::ServerLimits;
use kubeecr::servers::limits::ServerTimeouts;
use kubeecr::telemetry::metrics::Metrics;
use kubeecr_testkit::moto::dead_endpoint;
use kubeecr_testkit::tls::{Alpn, HttpsClient, client_config, https_client};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::client::TlsStream;

use crate::common::*;

/// Short bounds, so that each test takes seconds.
const TIMEOUTS: ServerTimeouts = ServerTimeouts {
    handshake: Duration::from_secs(2),
    idle: Duration::from_secs(2),
    first_request: Duration::from_secs(2),
    body: Duration::from_secs(1),
    request: Duration::from_secs(3),
    drain: Duration::from_secs(1),
};

/// What a bound may take beyond its own length on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

fn bounded(timeouts: ServerTimeouts, limits: ServerLimits) -> ServerSettings {
    ServerSettings {
        name: kubeecr::telemetry::metrics::Server::Webhook,
        timeouts,
        limits,
    }
}

/// The webhook without AWS, and its metrics.
async fn start(server: ServerSettings) -> (RunningWebhook, Arc<Metrics>) {
    let mut state = webhook_state(
        token_cache(&dead_endpoint()).await,
        Policy::default(),
        false,
    );
    state.fill = false;
    let metrics = Arc::clone(&state.metrics);
    (RunningWebhook::start_bounded(state, server).await, metrics)
}

fn review(name: &str) -> Bytes {
    let (_, review) = fixture(name);
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

const VALIDATE: &str = "02-create-annotated-nodata-apply-validate-create.json";
const MUTATE: &str = "01-create-annotated-nodata-apply-mutate-create.json";

/// POSTs a review; `Ok(status)` once answered, the review checked when 200.
async fn post(client: &HttpsClient, url: &str, path: &str, body: Bytes) -> Result<u16, String> {
    let req = http::Request::post(format!("{url}{path}?timeout=5s"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = res.status();
    let bytes = res.into_body().collect().await.map_err(|e| e.to_string())?;
    if status == StatusCode::OK {
        let v: Value = serde_json::from_slice(&bytes.to_bytes()).map_err(|e| e.to_string())?;
        if v["response"]["allowed"] != true {
            return Err(format!("not allowed: {v}"));
        }
        if path == "/mutate" && v["response"]["patch"].is_null() {
            return Err(format!("no placeholder patch: {v}"));
        }
    }
    Ok(status.as_u16())
}

/// A TLS connection offering `alpn` (none: the server sniffs the protocol).
async fn connect(webhook: &RunningWebhook, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = client_config(webhook.ca_pem().as_bytes());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(webhook.url.trim_start_matches("https://"))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// An HTTP/1.1 request head declaring `length` body bytes, and the first `body` bytes.
async fn start_request(
    webhook: &RunningWebhook,
    path: &str,
    length: usize,
    body: &[u8],
) -> TlsStream<TcpStream> {
    let mut tls = connect(webhook, &[b"http/1.1"]).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Reads until the server closes the connection; what it sent, or `Err` past `within`.
async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(
    mut stream: R,
    within: Duration,
) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let read = timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    match read {
        Ok(()) => Ok(seen),
        Err(_) => Err(format!(
            "still open after {within:?}, having sent {:?}",
            String::from_utf8_lossy(&seen)
        )),
    }
}

/// The status of the HTTP/1.1 response at the start of `bytes`.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// The status the server answers a request with, and closes after.
async fn answered(tls: TlsStream<TcpStream>, within: Duration) -> Result<u16, String> {
    let seen = read_to_close(tls, within).await?;
    status_of(&seen).ok_or_else(|| format!("no response: {:?}", String::from_utf8_lossy(&seen)))
}

fn counted(metrics: &Metrics, reason: &str) -> u64 {
    let prefix = format!("kubeecr_http_refused_total{{server=\"webhook\",reason=\"{reason}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

/// A request that HTTP/2 sends headers for, then one body byte, then nothing.
async fn slow_h2_body(
    webhook: &RunningWebhook,
    length: usize,
) -> (
    tokio::task::JoinHandle<Result<u16, String>>,
    futures::channel::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>,
) {
    use futures::SinkExt;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(webhook.ca_pem().as_bytes()))
        .https_only()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let (mut tx, rx) = futures::channel::mpsc::channel(4);
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"{"))))
        .await
        .unwrap();
    let req = http::Request::post(format!("{}/validate", webhook.url))
        .header("content-length", length)
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    let answer = tokio::spawn(async move {
        client
            .request(req)
            .await
            .map(|res| res.status().as_u16())
            .map_err(|e| format!("{e:?}"))
    });
    (answer, tx)
}

/// Guards the reported defect: headers declaring 3 MB, then one byte, held connections for
/// good. Each must be answered (408 because its body timed out, or 503 because the body
/// budget was spoken for) and closed; an HTTP/2 stream gets its 408 too. Each answer is
/// counted under its cause.
#[tokio::test]
async fn slow_bodies_are_cut_off_at_the_body_timeout() {
    let (webhook, metrics) = start(bounded(TIMEOUTS, ServerLimits::WEBHOOK)).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(start_request(&webhook, "/validate", 3_000_000, b"{").await);
    }
    // Small enough to fit what the HTTP/1.1 ones leave of the body budget.
    let mut h2 = Vec::new();
    for _ in 0..3 {
        h2.push(slow_h2_body(&webhook, 1_000).await);
    }
    let bound = TIMEOUTS.body + SLACK;
    let mut answers =
        futures::future::join_all(slow.into_iter().map(|tls| answered(tls, bound))).await;
    let http1 = answers.len();
    for (answer, _still_sending) in h2 {
        answers.push(timeout(bound, answer).await.expect("h2 answered").unwrap());
    }
    // Each answer was given for its cause, as counted: a 408 for a body that timed out, a
    // 503 for a body that found the budget spoken for; nothing waited for the request
    // timeout.
    let of = |status| answers.iter().filter(|a| **a == Ok(status)).count() as u64;
    assert_eq!(counted(&metrics, "body_timeout"), of(408), "{answers:?}");
    assert_eq!(counted(&metrics, "body_budget"), of(503), "{answers:?}");
    for other in ["busy", "request_timeout", "too_large"] {
        assert_eq!(counted(&metrics, other), 0, "{other}: {answers:?}");
    }
    for answer in &answers[..http1] {
        assert!(
            matches!(answer, Ok(408 | 503)),
            "a slow body was not cut off: {answer:?}"
        );
    }
    assert!(answers[..http1].contains(&Ok(408)), "{answers:?}");
    for answer in &answers[http1..] {
        assert_eq!(answer, &Ok(408), "HTTP/2");
    }
}

/// What a slowloris client sends, one piece at a time.
enum Dribble {
    /// An HTTP/1.1 request head, a byte at a time.
    Http1Head,
    /// The HTTP/2 preface without ALPN, so that the server cannot yet tell the protocol.
    Preface,
    /// HTTP/2 (ALPN h2): a HEADERS frame without END_HEADERS, then a few one-byte
    /// CONTINUATION frames (h2 closes the connection past 5), then nothing.
    Http2Headers,
    /// Nothing at all after the TLS handshake.
    Silent,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Opens a connection that dribbles `what` every 200 ms; resolves once the server closes it.
async fn dribble(webhook: &RunningWebhook, what: Dribble, within: Duration) -> Result<(), String> {
    let alpn: &[&[u8]] = match what {
        Dribble::Http2Headers => &[b"h2"],
        Dribble::Http1Head => &[b"http/1.1"],
        Dribble::Preface | Dribble::Silent => &[],
    };
    let tls = connect(webhook, alpn).await;
    let (reader, mut writer) = tokio::io::split(tls);
    let (first, pieces): (Vec<u8>, Vec<Vec<u8>>) = match what {
        Dribble::Http1Head => (
            Vec::new(),
            b"POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .iter()
                .map(|b| vec![*b])
                .collect(),
        ),
        Dribble::Preface => (Vec::new(), PREFACE.iter().map(|b| vec![*b]).collect()),
        Dribble::Http2Headers => {
            let mut first = PREFACE.to_vec();
            first.extend(frame(0x4, 0, 0, &[])); // SETTINGS
            first.extend(frame(0x1, 0, 1, &[0x83])); // HEADERS :method POST, more to come
            // CONTINUATION, each one more header (accept-encoding), never END_HEADERS.
            (first, (0..4).map(|_| frame(0x9, 0, 1, &[0x90])).collect())
        }
        Dribble::Silent => (Vec::new(), Vec::new()),
    };
    let sending = tokio::spawn(async move {
        if writer.write_all(&first).await.is_err() {
            return;
        }
        for piece in pieces {
            // The slowloris's pause between pieces: the scenario itself.
            sleep(Duration::from_millis(200)).await;
            if writer.write_all(&piece).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        // Keep the write half open.
        sleep(Duration::from_secs(60)).await;
    });
    let closed = read_to_close(reader, within).await.map(|_| ());
    sending.abort();
    closed
}

/// Guards the idle bound on every connection: a silent connection and a dribbled HTTP/2
/// preface stay open for good without it (hyper-util reads the preface with no timeout), and
/// so do dribbled HTTP/2 headers (HTTP/2 has no header timeout). A dribbled HTTP/1.1 head is
/// cut by hyper's header timeout.
#[tokio::test]
async fn slowloris_connections_are_closed() {
    let (webhook, _) = start(bounded(TIMEOUTS, ServerLimits::WEBHOOK)).await;
    // Idle, then the graceful close's own bound (the request timeout).
    let within = TIMEOUTS.idle + TIMEOUTS.request + SLACK;
    let closed = futures::future::join_all(
        [
            Dribble::Http1Head,
            Dribble::Preface,
            Dribble::Http2Headers,
            Dribble::Silent,
        ]
        .into_iter()
        .map(|what| dribble(&webhook, what, within)),
    )
    .await;
    let open: Vec<_> = ["HTTP/1.1 head", "preface", "HTTP/2 headers", "silent"]
        .iter()
        .zip(closed)
        .filter(|(_, closed)| closed.is_err())
        .collect();
    assert!(open.is_empty(), "{open:?}");
}

/// Guards against a bound that hits the API server instead of the attacker: while slow
/// bodies and slowloris connections are at their worst, reviews over kept-alive HTTP/2 and
/// HTTP/1.1 connections are all answered correctly, and the attackers are all cut off.
#[tokio::test]
async fn reviews_are_answered_while_clients_hold_connections() {
    // Every attacker here comes from 127.0.0.1, as the clients do: no per-address share, so
    // that the other bounds are what cut them off.
    let limits = ServerLimits {
        max_connections_per_ip: 0,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, _) = start(bounded(TIMEOUTS, limits)).await;
    let ca = webhook.ca_pem();
    let clients = [
        https_client(ca.as_bytes(), Alpn::Http2),
        https_client(ca.as_bytes(), Alpn::Http1),
    ];
    for client in &clients {
        assert_eq!(
            post(client, &webhook.url, "/validate", review(VALIDATE)).await,
            Ok(200)
        );
    }

    let within = TIMEOUTS.idle + TIMEOUTS.request + SLACK;
    let webhook = Arc::new(webhook);
    let attack = {
        let webhook = Arc::clone(&webhook);
        tokio::spawn(async move {
            let mut slow = Vec::new();
            for _ in 0..20 {
                slow.push(start_request(&webhook, "/validate", 3_000_000, b"{").await);
            }
            let bodies = futures::future::join_all(
                slow.into_iter()
                    .map(|tls| answered(tls, TIMEOUTS.body + SLACK)),
            );
            let loris = futures::future::join_all((0..12).map(|i| {
                let what = match i % 4 {
                    0 => Dribble::Http1Head,
                    1 => Dribble::Preface,
                    2 => Dribble::Http2Headers,
                    _ => Dribble::Silent,
                };
                dribble(&webhook, what, within)
            }));
            let (bodies, loris) = tokio::join!(bodies, loris);
            (bodies, loris)
        })
    };

    let mut answered_ok = 0;
    while !attack.is_finished() {
        for (client, path, body) in [
            (&clients[0], "/validate", review(VALIDATE)),
            (&clients[0], "/mutate", review(MUTATE)),
            (&clients[1], "/validate", review(VALIDATE)),
            (&clients[1], "/mutate", review(MUTATE)),
        ] {
            assert_eq!(
                post(client, &webhook.url, path, body).await,
                Ok(200),
                "{path}"
            );
            answered_ok += 1;
        }
        // The legitimate clients' pace while the attack lasts: the scenario itself.
        sleep(Duration::from_millis(50)).await;
    }
    let (bodies, loris) = attack.await.unwrap();
    for answer in bodies {
        assert!(matches!(answer, Ok(408 | 503)), "slow body: {answer:?}");
    }
    for closed in loris {
        assert!(closed.is_ok(), "slowloris: {closed:?}");
    }
    assert!(
        answered_ok >= 8,
        "reviews were sent throughout: {answered_ok}"
    );
}

/// Guards the connection bound: with 4 connections held, a 5th is not served (it waits in
/// the listen backlog) until one of them closes, and then it is.
#[tokio::test]
async fn a_connection_past_the_limit_waits_until_one_closes() {
    let timeouts = ServerTimeouts {
        idle: Duration::from_secs(20),
        first_request: Duration::from_secs(20),
        ..TIMEOUTS
    };
    let limits = ServerLimits {
        max_connections: 4,
        max_connections_per_ip: 0,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, metrics) = start(bounded(timeouts, limits)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&webhook, &[b"http/1.1"]).await);
    }
    let client = https_client(webhook.ca_pem().as_bytes(), Alpn::Http1);
    let url = webhook.url.clone();
    let mut fifth =
        tokio::spawn(async move { post(&client, &url, "/validate", review(VALIDATE)).await });
    assert!(
        timeout(Duration::from_secs(1), &mut fifth).await.is_err(),
        "a 5th connection was served while 4 were open"
    );
    assert!(
        metrics
            .encode()
            .contains("kubeecr_http_connections{server=\"webhook\"} 4")
    );
    assert!(counted(&metrics, "connection_limit") >= 1);

    drop(held.pop());
    let served = timeout(SLACK, fifth).await.expect("served once one closed");
    assert_eq!(served.unwrap(), Ok(200));
}

/// Guards the request bound: with 2 requests in flight (slow bodies), a 3rd gets 503 at
/// once instead of queueing; once they end, requests are served again.
#[tokio::test]
async fn requests_past_the_concurrency_limit_get_503() {
    let timeouts = ServerTimeouts {
        body: Duration::from_secs(10),
        request: Duration::from_secs(10),
        ..TIMEOUTS
    };
    let limits = ServerLimits {
        max_concurrent_requests: 2,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, metrics) = start(bounded(timeouts, limits)).await;
    let client = https_client(webhook.ca_pem().as_bytes(), Alpn::Http2);
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(start_request(&webhook, "/validate", 100, b"{").await);
    }
    let status = until(&client, &webhook.url, review(VALIDATE), 503).await;
    assert_eq!(status, Ok(503));
    assert!(counted(&metrics, "busy") >= 1);

    drop(slow);
    let status = until(&client, &webhook.url, review(VALIDATE), 200).await;
    assert_eq!(status, Ok(200), "served again once the slow requests ended");
}

/// POSTs to /validate until the answer is `want`, for `SLACK` at most; the last answer.
async fn until(client: &HttpsClient, url: &str, body: Bytes, want: u16) -> Result<u16, String> {
    let deadline = Instant::now() + SLACK;
    loop {
        let status = post(client, url, "/validate", body.clone()).await;
        if status == Ok(want) || Instant::now() > deadline {
            return status;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Guards the body budget: a declared length past `max_request_bytes` gets 413 before a body
/// byte is sent; bodies whose declared lengths would pass the budget get 503 while smaller
/// ones still fit; and the budget comes back when requests end.
#[tokio::test]
async fn bodies_are_bounded_by_size_and_by_a_shared_budget() {
    let timeouts = ServerTimeouts {
        body: Duration::from_secs(10),
        request: Duration::from_secs(10),
        ..TIMEOUTS
    };
    let limits = ServerLimits {
        max_request_bytes: 100_000,
        max_buffered_request_bytes: 200_000,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, metrics) = start(bounded(timeouts, limits)).await;

    // No body byte is ever sent: the answer cannot have waited for one.
    let oversized = start_request(&webhook, "/validate", 10_000_000, b"").await;
    assert_eq!(answered(oversized, SLACK).await, Ok(413));
    assert!(counted(&metrics, "too_large") >= 1);

    // Declaring a body costs nothing until it arrives: five stalled 90 kB bodies hold next to
    // nothing, and a real 90 kB review is answered.
    let client = https_client(webhook.ca_pem().as_bytes(), Alpn::Http1);
    let big = padded(review(VALIDATE), 90_000);
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(start_request(&webhook, "/validate", 90_000, b"{").await);
    }
    assert_eq!(
        post(&client, &webhook.url, "/validate", big.clone()).await,
        Ok(200),
        "stalled bodies hold no budget"
    );
    drop(stalled);

    // Two bodies of 90 kB that have almost arrived hold 180 kB of the 200 kB.
    let mut slow = Vec::new();
    let almost = vec![b' '; 89_000];
    for _ in 0..2 {
        slow.push(start_request(&webhook, "/validate", 90_000, &almost).await);
    }
    assert_eq!(
        until(&client, &webhook.url, big.clone(), 503).await,
        Ok(503)
    );
    assert!(counted(&metrics, "body_budget") >= 1);
    assert_eq!(
        post(&client, &webhook.url, "/validate", review(VALIDATE)).await,
        Ok(200),
        "a small review still fits"
    );

    drop(slow);
    assert_eq!(
        until(&client, &webhook.url, big, 200).await,
        Ok(200),
        "the budget comes back"
    );
}

/// `body` followed by spaces (still the same JSON) up to `len` bytes.
fn padded(body: Bytes, len: usize) -> Bytes {
    let mut v = body.to_vec();
    v.resize(len, b' ');
    Bytes::from(v)
}

/// Guards the header bound: a 20 KiB HTTP/1.1 head gets 431 with the 16 KiB limit (hyper's
/// own default lets about 400 KiB in).
#[tokio::test]
async fn oversized_headers_are_refused() {
    let (webhook, _) = start(bounded(TIMEOUTS, ServerLimits::WEBHOOK)).await;
    let mut tls = connect(&webhook, &[b"http/1.1"]).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(answered(tls, SLACK).await, Ok(431));
}

/// Guards the admin port's bounds (plain TCP, where the protocol is sniffed): a silent
/// connection is closed once idle, and past its connection limit a probe waits until one
/// closes.
#[tokio::test]
async fn the_admin_port_is_bounded_too() {
    let (_certificate, certificate_loaded) = tokio::sync::watch::channel(true);
    let (_pending, watch_pending) = tokio::sync::watch::channel(None);
    let (_stopping, shutting_down) = tokio::sync::watch::channel(false);
    let health = kubeecr::servers::admin::Health {
        certificate_loaded,
        watch_pending,
        shutting_down,
    };
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = ServerSettings {
        timeouts: TIMEOUTS,
        limits: ServerLimits {
            max_connections: 1,
            max_connections_per_ip: 0,
            ..ServerLimits::ADMIN
        },
        ..ServerSettings::ADMIN
    };
    let paused = {
        let metrics = Arc::clone(&metrics);
        move || {
            let prefix =
                "kubeecr_http_refused_total{server=\"admin\",reason=\"connection_limit\"} ";
            metrics
                .encode()
                .lines()
                .find_map(|l| l.strip_prefix(prefix)?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let server = tokio::spawn(kubeecr::servers::http::serve(
        listener,
        None,
        kubeecr::servers::admin::router(health, Arc::clone(&metrics)),
        settings,
        metrics,
        std::future::pending(),
    ));
    let livez = || async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        status_of(&read_to_close(tcp, SLACK).await?).ok_or("no status".to_string())
    };
    assert_eq!(livez().await, Ok(200));

    // No body is waited for: a request that declares one, or may stream one, is refused at
    // once, so it cannot hold a request slot.
    for head in [
        "POST /livez HTTP/1.1\r\nhost: x\r\ncontent-length: 16000\r\nconnection: close\r\n\r\n",
        "POST /livez HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = read_to_close(tcp, SLACK).await;
        assert_eq!(answer.ok().and_then(|a| status_of(&a)), Some(413), "{head}");
    }

    // The silent connection takes the one slot: accepting pauses, counted, and nothing more
    // is accepted until a slot is free.
    let before = paused();
    let silent = TcpStream::connect(addr).await.unwrap();
    let probe = tokio::spawn(livez());
    let held = async {
        while paused() == before {
            sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(SLACK, held)
        .await
        .expect("accepting paused at the limit of 1");
    assert!(
        !probe.is_finished(),
        "a 2nd connection was served past the limit of 1"
    );
    assert!(read_to_close(silent, TIMEOUTS.idle + SLACK).await.is_ok());
    assert_eq!(
        probe.await.unwrap(),
        Ok(200),
        "served once the silent one closed"
    );
    server.abort();
}

/// Guards the per-address share: past it, a connection from the same address is closed at
/// once, while another address is still served (as the kubelet's probes are while one pod
/// holds connections to the admin port).
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let limits = ServerLimits {
        max_connections_per_ip: 2,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, metrics) = start(bounded(TIMEOUTS, limits)).await;
    let port: u16 = webhook.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect(&webhook, &[b"http/1.1"]).await);
    }
    // A third from 127.0.0.1: closed before any handshake.
    let third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(read_to_close(third, SLACK).await.is_ok(), "closed at once");
    assert!(counted(&metrics, "peer_limit") >= 1);
    // From 127.0.0.2: served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let mut config = client_config(webhook.ca_pem().as_bytes());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), other)
        .await
        .expect("another address gets a handshake");
    let body = review(VALIDATE);
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(answered(tls, SLACK).await, Ok(200));
    // Once one of the first two closes (the server sees it go), 127.0.0.1 is served again.
    drop(held.pop());
    let open = || {
        let prefix = "kubeecr_http_connections{server=\"webhook\"} ";
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.parse::<i64>().ok())
    };
    let closed = async {
        while open() != Some(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(SLACK, closed)
        .await
        .unwrap_or_else(|_| panic!("the server saw the connection close: {:?} open", open()));
    let again = start_request(&webhook, "/validate", 0, b"").await;
    assert!(answered(again, SLACK).await.is_ok());
}

/// A TCP connection to the webhook from `from` (a loopback address), saying nothing.
async fn silent_from(webhook: &RunningWebhook, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket
        .connect(webhook.url.trim_start_matches("https://").parse().unwrap())
        .await
        .unwrap()
}

/// Guards the handshake places: silent connections from many addresses (each within its
/// share) take every place a handshake may have, and a new connection still gets its
/// handshake at once, the oldest silent one giving way; connections past their handshake
/// keep their slots meanwhile.
#[tokio::test]
async fn silent_connections_never_keep_a_new_one_from_its_handshake() {
    let timeouts = ServerTimeouts {
        handshake: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        first_request: Duration::from_secs(30),
        ..TIMEOUTS
    };
    let limits = ServerLimits {
        max_connections: 16,
        max_connections_per_ip: 2,
        ..ServerLimits::WEBHOOK
    };
    let (webhook, metrics) = start(bounded(timeouts, limits)).await;
    let established = connect(&webhook, &[b"http/1.1"]).await;
    // 8 silent connections from 4 addresses: twice the 4 handshake places of 16 slots.
    let mut silent = Vec::new();
    for i in 0..8 {
        silent.push(silent_from(&webhook, &format!("127.0.0.{}", 10 + i / 2)).await);
    }
    let evicted = crate::serve_process::eventually(SLACK, || async {
        (counted(&metrics, "handshake_evicted") >= 4).then_some(())
    })
    .await;
    assert!(evicted.is_some(), "the oldest silent handshakes gave way");
    // A new caller completes its handshake and is answered well inside the 30 s handshake
    // bound the silent ones have; so is the connection that was past its handshake already.
    let fresh = timeout(SLACK, connect(&webhook, &[b"http/1.1"]))
        .await
        .expect("a handshake at once");
    assert_eq!(validate_once(fresh).await, Ok(200));
    assert_eq!(validate_once(established).await, Ok(200));
    assert_eq!(counted(&metrics, "handshake_timeout"), 0);
}

/// One review sent on `tls`, which the server closes after answering.
async fn validate_once(mut tls: TlsStream<TcpStream>) -> Result<u16, String> {
    let body = review(VALIDATE);
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    tls.flush().await.unwrap();
    answered(tls, SLACK).await
}

/// Guards the first-request bound: a connection past its handshake that sends nothing is
/// closed after `first_request`, well before the idle bound that a connection which has
/// sent a request gets.
#[tokio::test]
async fn a_connection_that_never_asks_is_closed_early() {
    let timeouts = ServerTimeouts {
        idle: Duration::from_secs(60),
        first_request: Duration::from_secs(1),
        ..TIMEOUTS
    };
    let (webhook, _) = start(bounded(timeouts, ServerLimits::WEBHOOK)).await;
    let silent = connect(&webhook, &[b"http/1.1"]).await;
    assert!(
        read_to_close(silent, Duration::from_secs(1) + SLACK)
            .await
            .is_ok(),
        "closed after its first-request bound, not its idle one"
    );
    // One that asks is kept past that bound.
    let asked = start_request(&webhook, "/validate", 0, b"").await;
    let kept = read_to_close(asked, Duration::from_secs(3)).await;
    assert!(kept.is_err(), "still open: {kept:?}");
}
