//! Forces genuine 409 conflicts on any API server: before a chosen PATCH of a Secret is sent,
//! another writer changes that Secret, so the patch's resourceVersion is stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::client::Body;
use tower::{Layer, Service};

/// The auth entry the `n`th interfering write adds.
pub fn interfering_host(n: usize) -> String {
    format!("interfered-{n}.example.com")
}

#[derive(Clone)]
pub struct ConflictLayer {
    namespace: String,
    name: String,
    /// A plain client for the interfering write.
    other_writer: kube::Client,
    remaining: Arc<AtomicUsize>,
    /// Conflicts forced so far.
    pub forced: Arc<AtomicUsize>,
}

impl ConflictLayer {
    pub fn new(other_writer: kube::Client, namespace: &str, name: &str, times: usize) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            other_writer,
            remaining: Arc::new(AtomicUsize::new(times)),
            forced: Arc::default(),
        }
    }
}

impl<S> Layer<S> for ConflictLayer {
    type Service = ConflictService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConflictService {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct ConflictService<S> {
    inner: S,
    layer: ConflictLayer,
}

impl<S, R> Service<Request<Body>> for ConflictService<S>
where
    S: Service<Request<Body>, Response = R> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    R: Send + 'static,
{
    type Response = R;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<R, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let suffix = format!(
            "/namespaces/{}/secrets/{}",
            self.layer.namespace, self.layer.name
        );
        let interfere = req.method() == Method::PATCH
            && req.uri().path().ends_with(&suffix)
            && self
                .layer
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        // The client's request is only sent when its future is first polled.
        let fut = self.inner.call(req);
        if !interfere {
            return Box::pin(fut);
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            // The other writer, as a controller might be: it adds a label and an auth entry of
            // its own to .dockerconfigjson. A patch that ignored the resourceVersion would
            // drop that entry.
            let n = layer.forced.fetch_add(1, Ordering::SeqCst) + 1;
            let api: Api<Secret> = Api::namespaced(layer.other_writer.clone(), &layer.namespace);
            let current = api.get(&layer.name).await.expect("interfering read");
            let mut config: serde_json::Value = current
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
                .and_then(|b| serde_json::from_slice(&b.0).ok())
                .unwrap_or_else(|| serde_json::json!({"auths": {}}));
            config["auths"][interfering_host(n)] = serde_json::json!({"auth": "b3RoZXI6d3JpdGVy"});
            let data = k8s_openapi::ByteString(serde_json::to_vec(&config).unwrap());
            let patch = serde_json::json!({
                "metadata": {"labels": {"kubeecr.test/interfered": n.to_string()}},
                "data": {".dockerconfigjson": data},
            });
            api.patch(&layer.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("interfering write");
            fut.await
        })
    }
}
