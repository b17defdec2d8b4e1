//! TLS for the webhook: one rustls crypto provider for the process, and a serving certificate
//! that is reloaded from files without a restart.
//!
//! The files are polled and compared by content, so every way of replacing them is seen,
//! including the kubelet's atomic swap of the `..data` symlink of a mounted Secret, where the
//! paths never change. A pair that does not load, or whose key does not match, is logged and
//! the current pair keeps serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Installs ring as the process-wide rustls crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where cert-manager's Secret is mounted.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "reading {path}: {source}; mount the cert-manager Secret there or set --tls-cert-file/--tls-key-file"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found; expected tls.crt as cert-manager writes it")]
    NoCertificate { path: String },
    #[error(
        "{path}: no PEM private key found ({detail}); expected tls.key as cert-manager writes it"
    )]
    NoKey { path: String, detail: String },
    #[error("{path}: key is not usable: {detail}")]
    BadKey { path: String, detail: String },
    #[error("{cert} and {key} do not belong together ({detail}); a rotation may be in progress")]
    Mismatch {
        cert: String,
        key: String,
        detail: String,
    },
}

/// The bytes of a pair as read, to notice changes.
#[derive(PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_snapshot(files: &TlsFiles) -> Result<Snapshot, TlsError> {
    Ok(Snapshot {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
    })
}

fn certified_key(files: &TlsFiles, snapshot: &Snapshot) -> Result<CertifiedKey, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&snapshot.cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_slice(&snapshot.key).map_err(|e| TlsError::NoKey {
        path: key_path.clone(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_path,
            key: key_path.clone(),
            detail: e.to_string(),
        },
        other => TlsError::BadKey {
            path: key_path,
            detail: other.to_string(),
        },
    })
}

/// The serving certificate, swapped atomically; handshakes in flight keep the pair they got.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Watches the files and swaps the pair in a `CertStore`.
pub struct CertReloader {
    files: TlsFiles,
    store: Arc<CertStore>,
    last: Snapshot,
}

impl CertReloader {
    /// Loads the pair once; fails when it cannot serve at all.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let snapshot = read_snapshot(&files)?;
        let key = certified_key(&files, &snapshot)?;
        Ok(Self {
            store: Arc::new(CertStore {
                current: ArcSwap::from_pointee(key),
            }),
            files,
            last: snapshot,
        })
    }

    pub fn store(&self) -> Arc<CertStore> {
        Arc::clone(&self.store)
    }

    /// Re-reads the files; swaps in a changed pair that loads. Returns whether it swapped.
    pub fn reload(&mut self) -> Result<bool, TlsError> {
        let snapshot = read_snapshot(&self.files)?;
        if snapshot == self.last {
            return Ok(false);
        }
        let key = certified_key(&self.files, &snapshot)?;
        self.store.current.store(Arc::new(key));
        self.last = snapshot;
        Ok(true)
    }

    /// Polls forever. A broken pair is logged once per distinct content; the old one stays.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => {
                    last_error.clear();
                    tracing::info!(cert = %self.files.cert.display(), "loaded a new serving certificate");
                }
                Ok(false) => {}
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!("keeping the current serving certificate: {msg}");
                        last_error = msg;
                    }
                }
            }
        }
    }
}

/// TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 through ALPN, certificate from the store.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
