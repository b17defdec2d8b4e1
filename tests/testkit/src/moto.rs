//! ECR for tests: the moto server on 127.0.0.1, behind a proxy that counts the calls
//! (moto does not), answers GetAuthorizationToken as ECR does, and can make ECR slow or fail.
//!
//! moto answers every call with `<account>-auth-token` and an expiry in 2015. Real ECR answers
//! with a fresh password of 2,300–2,800 characters on every call and an expiry 12 hours ahead,
//! so the proxy rewrites moto's answer that way (`TokenStyle::Ecr`, the default). Each password
//! names what it was issued for, `tok-<region>-<access key id>-<n>-…`, and every one is
//! recorded (`EcrProxy::issued`), so a test can say exactly which token a host must hold.
//!
//! `scripts/test.sh` starts one moto and exports `KUBEECR_TEST_MOTO_URL`. Without it, the
//! first test to need moto starts `moto_server` (from `KUBEECR_TEST_MOTO_BIN`, else `PATH`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The target of ECR's GetAuthorizationToken in the JSON protocol.
pub const GET_AUTHORIZATION_TOKEN: &str =
    "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

static MOTO_URL: OnceLock<String> = OnceLock::new();

/// The base URL of a running moto server.
// The one unsafe call: `pre_exec`, so that moto dies with the test process.
#[allow(unsafe_code)]
pub fn moto_url() -> &'static str {
    MOTO_URL.get_or_init(|| {
        if let Ok(url) = std::env::var("KUBEECR_TEST_MOTO_URL") {
            wait_for(&url);
            return url;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = std::env::var("KUBEECR_TEST_MOTO_BIN").unwrap_or_else(|_| "moto_server".into());
        let (tx, rx) = std::sync::mpsc::channel();
        // A thread that never ends owns the child, so PDEATHSIG fires only when the test
        // process exits.
        std::thread::spawn(move || {
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            tx.send(
                child
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| format!("{bin}: {e}")),
            )
            .unwrap();
            if let Ok(mut child) = child {
                let _ = child.wait();
            }
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap().unwrap_or_else(|e| {
            panic!("cannot start moto ({e}); run the suite with scripts/test.sh, which installs it")
        });
        let url = format!("http://127.0.0.1:{port}");
        wait_for(&url);
        url
    })
}

fn wait_for(url: &str) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    for _ in 0..300 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto at {url} did not come up within 30s");
}

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    pub target: String,
    pub region: String,
    pub access_key_id: String,
    /// The SDK's `amz-sdk-invocation-id`: the same for every attempt of one operation, so
    /// calls with the same one are one fetch and its retries.
    pub invocation: String,
    /// When the proxy received it, by tokio's clock (so by the paused clock of a test that
    /// pauses it).
    pub at: tokio::time::Instant,
}

/// How the proxy answers GetAuthorizationToken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenStyle {
    /// As ECR does: a fresh password of 2,300–2,800 characters on every call, expiring 12
    /// hours after the call.
    #[default]
    Ecr,
    /// As ECR does, with this expiry (seconds since the epoch) instead of 12 hours ahead.
    EcrExpiringAt(i64),
    /// moto's own answer, unchanged: `<account>-auth-token`, expiring in 2015.
    Moto,
}

/// A token the proxy handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub region: String,
    /// The caller's access key id: the default credentials' key, or an AssumeRole session's.
    pub access_key_id: String,
    /// The role whose session the key belongs to, when it came from AssumeRole here.
    pub role: Option<String>,
    pub password: String,
    /// RFC 3339, whole seconds, as kubeecr records it.
    pub expires_at: String,
}

struct ProxyState {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    calls: Mutex<Vec<AwsCall>>,
    delay: Mutex<Duration>,
    fault: Mutex<Option<EcrFault>>,
    style: Mutex<TokenStyle>,
    issued: Mutex<Vec<Issued>>,
    /// AssumeRole sessions seen: access key id → role ARN.
    sessions: Mutex<HashMap<String, String>>,
}

/// An error the proxy answers with instead of moto's answer, as ECR sends it (awsJson1_1:
/// the type in `x-amzn-ErrorType` and in the body's `__type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcrFault {
    /// 400 `ThrottlingException`.
    Throttling,
    /// 500 `ServerException`.
    ServerError,
}

impl EcrFault {
    fn response(self) -> Response {
        let (status, kind, message) = match self {
            Self::Throttling => (400, "ThrottlingException", "Rate exceeded"),
            Self::ServerError => (500, "ServerException", "Internal error"),
        };
        let body = format!(r#"{{"__type":"{kind}","message":"{message}"}}"#);
        Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", kind)
            .body(Body::from(body))
            .unwrap()
    }
}

/// Shortest and longest password ECR hands out, as seen in real tokens.
pub const PASSWORD_LENGTHS: std::ops::RangeInclusive<usize> = 2300..=2800;

/// A password as ECR would give: unique, of a length in `PASSWORD_LENGTHS`, in base64's
/// alphabet, starting with what it was issued for.
fn password(region: &str, access_key_id: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ access_key_id.len() as u64;
    let mut next = || {
        // xorshift64*: deterministic, so a failing run can be replayed.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let span = (PASSWORD_LENGTHS.end() - PASSWORD_LENGTHS.start() + 1) as u64;
    let len = PASSWORD_LENGTHS.start() + (next() % span) as usize;
    let mut out = format!("tok-{region}-{access_key_id}-{n}-");
    while out.len() < len {
        out.push(ALPHABET[(next() % 64) as usize] as char);
    }
    out
}

/// `RoleArn=...` of an AssumeRole form body, percent-decoded.
fn form_value(body: &str, name: &str) -> Option<String> {
    let raw = body
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The `<AccessKeyId>` of STS's XML answer.
fn xml_value(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].trim().to_string())
}

/// A counting, delaying proxy in front of moto. Each test gets its own, so counts are its own.
pub struct EcrProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EcrProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Credential=AKID/20260101/us-west-2/ecr/aws4_request` → (AKID, us-west-2).
fn credential_scope(authorization: &str) -> (String, String) {
    let scope = authorization
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("");
    let mut parts = scope.split('/');
    let akid = parts.next().unwrap_or("").to_string();
    let region = parts.nth(1).unwrap_or("").to_string();
    (akid, region)
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (access_key_id, region) = credential_scope(&header("authorization"));
    let mut target = header("x-amz-target");
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if target.is_empty() {
        // Query protocol (STS): Action=AssumeRole in the form body.
        target = String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("")
            .to_string();
    }
    state.calls.lock().unwrap().push(AwsCall {
        target: target.clone(),
        region: region.clone(),
        access_key_id: access_key_id.clone(),
        invocation: header("amz-sdk-invocation-id"),
        at: tokio::time::Instant::now(),
    });
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if let Some(fault) = *state.fault.lock().unwrap() {
        return fault.response();
    }
    let uri = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut upstream = http::Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter() {
        upstream = upstream.header(k, v);
    }
    let response = match state
        .client
        .request(upstream.body(Full::new(body.clone())).unwrap())
        .await
    {
        Ok(resp) => resp,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let (mut parts, answer) = response.into_parts();
    let mut answer = answer
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.status.is_success() {
        if target.ends_with("AssumeRole") {
            let role = form_value(&String::from_utf8_lossy(&body), "RoleArn");
            let key = xml_value(&String::from_utf8_lossy(&answer), "AccessKeyId");
            if let (Some(role), Some(key)) = (role, key) {
                state.sessions.lock().unwrap().insert(key, role);
            }
        } else if target.ends_with("GetAuthorizationToken") {
            let style = *state.style.lock().unwrap();
            if let Some(rewritten) = state.as_ecr(style, &answer, &region, &access_key_id) {
                parts.headers.remove(http::header::CONTENT_LENGTH);
                answer = rewritten;
            }
        }
    }
    Response::from_parts(parts, Body::from(answer))
}

impl ProxyState {
    /// moto's GetAuthorizationToken answer with ECR's token and expiry, recorded; `None` for
    /// `TokenStyle::Moto` or an answer that is not moto's.
    fn as_ecr(&self, style: TokenStyle, answer: &[u8], region: &str, key: &str) -> Option<Bytes> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expires_at = match style {
            TokenStyle::Moto => return None,
            TokenStyle::Ecr => now + 12 * 3600,
            TokenStyle::EcrExpiringAt(at) => at,
        };
        let mut value: serde_json::Value = serde_json::from_slice(answer).ok()?;
        let data = value.get_mut("authorizationData")?.as_array_mut()?;
        let mut issued = self.issued.lock().unwrap();
        let role = self.sessions.lock().unwrap().get(key).cloned();
        for entry in data.iter_mut() {
            let password = password(region, key, issued.len() + 1);
            let token = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("AWS:{password}"),
            );
            entry["authorizationToken"] = serde_json::json!(token);
            entry["expiresAt"] = serde_json::json!(expires_at as f64);
            issued.push(Issued {
                region: region.to_string(),
                access_key_id: key.to_string(),
                role: role.clone(),
                password,
                expires_at: jiff::Timestamp::from_second(expires_at).ok()?.to_string(),
            });
        }
        Some(Bytes::from(serde_json::to_vec(&value).ok()?))
    }
}

impl EcrProxy {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", moto_url()).await
    }

    /// A proxy listening on `addr`, in front of the moto server at `upstream`.
    pub async fn start_on(addr: &str, upstream: &str) -> Self {
        let upstream = upstream.trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            fault: Mutex::new(None),
            style: Mutex::new(TokenStyle::default()),
            issued: Mutex::default(),
            sessions: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call whose target ends with `target` (e.g. `GetAuthorizationToken`, `AssumeRole`).
    pub fn calls(&self, target: &str) -> Vec<AwsCall> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.target.ends_with(target))
            .cloned()
            .collect()
    }

    pub fn token_calls(&self) -> Vec<AwsCall> {
        self.calls(GET_AUTHORIZATION_TOKEN)
    }

    /// GetAuthorizationToken calls grouped by SDK invocation, in the order each began: one
    /// entry per fetch, holding its attempts (the SDK's retries included).
    pub fn token_fetches(&self) -> Vec<Vec<AwsCall>> {
        let mut fetches: Vec<Vec<AwsCall>> = Vec::new();
        for call in self.token_calls() {
            match fetches
                .iter_mut()
                .find(|f| f[0].invocation == call.invocation)
            {
                Some(fetch) => fetch.push(call),
                None => fetches.push(vec![call]),
            }
        }
        fetches
    }

    /// Delays every later answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Answers every later call with `fault` (counted all the same), or as moto does.
    pub fn set_fault(&self, fault: Option<EcrFault>) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// How later GetAuthorizationToken calls are answered.
    pub fn set_token_style(&self, style: TokenStyle) {
        *self.state.style.lock().unwrap() = style;
    }

    /// Every token handed out so far, oldest first.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().unwrap().clone()
    }

    /// The newest token handed out for `region` to the default credentials (`role: None`) or
    /// to a session of `role`.
    pub fn newest(&self, region: &str, role: Option<&str>) -> Option<Issued> {
        self.issued()
            .into_iter()
            .rev()
            .find(|i| i.region == region && i.role.as_deref() == role)
    }
}

/// A URL where nothing listens: ECR that is down.
pub fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Static test credentials, set once for the whole test process, and no profile files.
// `set_var` is unsafe where another thread reads the environment at the same time.
#[allow(unsafe_code)]
pub fn use_test_credentials() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAKUBEECRTEST00001");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "kubeecr-test-secret");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
    });
}
