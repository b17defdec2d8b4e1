//! ECR for tests: the moto server on 127.0.0.1, behind a proxy that counts the calls
//! (moto does not) and can make ECR slow.
//!
//! `scripts/test.sh` starts one moto and exports `KUBEECR_TEST_MOTO_URL`. Without it, the
//! first test to need moto starts `moto_server` (from `KUBEECR_TEST_MOTO_BIN`, else `PATH`).

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
}

struct ProxyState {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    calls: Mutex<Vec<AwsCall>>,
    delay: Mutex<Duration>,
    fault: Mutex<Option<EcrFault>>,
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
        target,
        region,
        access_key_id,
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
    match state
        .client
        .request(upstream.body(Full::new(body)).unwrap())
        .await
    {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl EcrProxy {
    pub async fn start() -> Self {
        let upstream = moto_url().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            fault: Mutex::new(None),
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

    /// Delays every later answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Answers every later call with `fault` (counted all the same), or as moto does.
    pub fn set_fault(&self, fault: Option<EcrFault>) {
        *self.state.fault.lock().unwrap() = fault;
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
