//! TLS for the webhook: one rustls crypto provider for the process, a serving certificate
//! and, with `--client-ca-file`, the CA that client certificates must chain to, both reloaded
//! from files without a restart.
//!
//! The files are polled and compared by content, so every way of replacing them is seen,
//! including the kubelet's atomic swap of the `..data` symlink of a mounted Secret, where the
//! paths never change. A pair that does not load, a key that does not match, or a CA file
//! with no certificate is logged and what was loaded before keeps serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// Installs ring as the process-wide rustls crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where cert-manager's Secret is mounted, and the client CA if clients must authenticate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA (PEM); `None`: no client authentication.
    pub client_ca: Option<PathBuf>,
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
    #[error(
        "{path}: not a usable client CA ({detail}); --client-ca-file takes the PEM CA that signs the API server's client certificate"
    )]
    ClientCa { path: String, detail: String },
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

/// A verifier that accepts only client certificates chaining to the CA in `pem`.
fn client_verifier(path: &Path, pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let error = |detail: String| TlsError::ClientCa {
        path: path.display().to_string(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| error(e.to_string()))?;
        roots.add(cert).map_err(|e| error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(error("no PEM certificate found".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| error(e.to_string()))
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

impl CertStore {
    /// When the certificate being served expires, in Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        let key = self.current.load();
        crate::servers::cert_expiry::not_after(key.cert.first()?.as_ref())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The client CA's verifier, swapped atomically: every handshake must present a certificate
/// that chains to the CA loaded last.
pub struct ClientCaStore {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ClientCaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCaStore").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientCaStore {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // No hints: a client with one certificate (the API server) sends it anyway, and the
    // names would have to outlive a swap.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// Watches the files and swaps the pair in a `CertStore` (and the client CA in a
/// `ClientCaStore`), each on its own: a broken CA file does not hold up a renewed pair.
pub struct CertReloader {
    files: TlsFiles,
    store: Arc<CertStore>,
    clients: Option<(PathBuf, Arc<ClientCaStore>, Vec<u8>)>,
    last: Snapshot,
}

impl CertReloader {
    /// Loads the files once; fails when it cannot serve at all.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let snapshot = read_snapshot(&files)?;
        let key = certified_key(&files, &snapshot)?;
        let clients = match &files.client_ca {
            Some(path) => {
                let pem = read(path)?;
                let store = Arc::new(ClientCaStore {
                    current: ArcSwap::from_pointee(client_verifier(path, &pem)?),
                });
                Some((path.clone(), store, pem))
            }
            None => None,
        };
        Ok(Self {
            store: Arc::new(CertStore {
                current: ArcSwap::from_pointee(key),
            }),
            clients,
            files,
            last: snapshot,
        })
    }

    pub fn store(&self) -> Arc<CertStore> {
        Arc::clone(&self.store)
    }

    /// The client verifier, when clients must authenticate.
    pub fn clients(&self) -> Option<Arc<ClientCaStore>> {
        self.clients.as_ref().map(|(_, store, _)| Arc::clone(store))
    }

    /// Re-reads the files; swaps in what changed and loads. Returns whether it swapped
    /// anything; an error names the file that did not load (the other may have swapped).
    pub fn reload(&mut self) -> Result<bool, TlsError> {
        let pair = self.reload_pair();
        let ca = self.reload_client_ca();
        match (pair, ca) {
            (Ok(a), Ok(b)) => Ok(a || b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    fn reload_pair(&mut self) -> Result<bool, TlsError> {
        let snapshot = read_snapshot(&self.files)?;
        if snapshot == self.last {
            return Ok(false);
        }
        let key = certified_key(&self.files, &snapshot)?;
        self.store.current.store(Arc::new(key));
        self.last = snapshot;
        Ok(true)
    }

    fn reload_client_ca(&mut self) -> Result<bool, TlsError> {
        let Some((path, store, last)) = &mut self.clients else {
            return Ok(false);
        };
        let pem = read(path)?;
        if pem == *last {
            return Ok(false);
        }
        store.current.store(Arc::new(client_verifier(path, &pem)?));
        *last = pem;
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
                    tracing::info!(cert = %self.files.cert.display(), "loaded new certificates");
                }
                Ok(false) => {}
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(cert = %self.files.cert.display(), "keeping the current certificates: {msg}");
                        last_error = msg;
                    }
                }
            }
        }
    }
}

/// TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 through ALPN, certificate from the store; with
/// `clients`, a handshake without a certificate chaining to the client CA fails.
pub fn server_config(
    store: Arc<CertStore>,
    clients: Option<Arc<ClientCaStore>>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let authenticate = clients.is_some();
    let builder = match clients {
        Some(clients) => builder.with_client_cert_verifier(clients),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store);
    if authenticate {
        // A resumed session skips the verifier and keeps the certificate of the first
        // handshake, which a rotated CA or an expired certificate would no longer pass. The
        // API server's Go client does not resume anyway.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
