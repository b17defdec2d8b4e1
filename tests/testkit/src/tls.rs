//! Generated certificates: a CA, and serving certificates for 127.0.0.1 signed by it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key (a serving certificate possibly with the CA appended, as
/// cert-manager's `tls.crt` can be, or a client certificate).
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for 127.0.0.1 and localhost; `chain` appends the CA, as a full chain.
    pub fn serving(&self, common_name: &str, chain: bool) -> ServingCert {
        self.serving_for(common_name, chain, &[])
    }

    /// A client certificate with common name `name`, as kube-apiserver presents to webhooks.
    pub fn client(&self, name: &str) -> ServingCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// As `serving`, valid for `extra_names` (IPs or DNS names) too.
    pub fn serving_for(&self, common_name: &str, chain: bool, extra_names: &[&str]) -> ServingCert {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_names.iter().map(|n| n.to_string()));
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut cert_pem = cert.pem();
        if chain {
            cert_pem.push_str(&self.pem());
        }
        ServingCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Which protocols a client offers through ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    Http1,
    Http2,
    Both,
}

/// A rustls client config that trusts only `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> rustls::ClientConfig {
    client_config_as(ca_pem, None)
}

/// As `client_config`, presenting `identity` as its client certificate when given.
pub fn client_config_as(ca_pem: &[u8], identity: Option<&ServingCert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .map(|c| c.expect("client cert"))
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    }
}

/// An HTTPS client that trusts only `ca_pem`, as the API server does with a caBundle.
pub fn https_client(ca_pem: &[u8], alpn: Alpn) -> HttpsClient {
    https_client_as(ca_pem, alpn, None)
}

/// As `https_client`, presenting `identity` as its client certificate when given, as an API
/// server with an AdmissionConfiguration kubeconfig does.
pub fn https_client_as(ca_pem: &[u8], alpn: Alpn, identity: Option<&ServingCert>) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config_as(ca_pem, identity))
        .https_only();
    let connector = match alpn {
        Alpn::Http1 => builder.enable_http1().build(),
        Alpn::Http2 => builder.enable_http2().build(),
        Alpn::Both => builder.enable_all_versions().build(),
    };
    let mut client = Client::builder(TokioExecutor::new());
    if matches!(alpn, Alpn::Http2) {
        client.http2_only(true);
    }
    client.build(connector)
}
