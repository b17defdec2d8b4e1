//! `kubeecr certs`: a CA and a serving certificate for the webhook's Service, for clusters
//! without cert-manager and for local runs. The CA's key is never written: renewing means
//! running it again (`--force`) and applying the new certificate and `caBundle` together.
//! The bundle then trusts the previous CA too, so that pods still serving the old
//! certificate until the kubelet updates their mount keep being trusted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// What to issue.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    pub service: String,
    pub namespace: String,
    /// More DNS names or IP addresses, e.g. `127.0.0.1` for a local run.
    pub extra_names: Vec<String>,
    pub valid_for: Duration,
}

/// The PEM files, as kubernetes.io/tls Secrets and `caBundle` take them.
#[derive(Debug)]
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generating the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} already exists; pass --force to replace the certificates (then apply the new caBundle too)",
        path.display()
    )]
    Exists { path: PathBuf },
}

/// The names the API server uses for the Service, then the extra ones.
pub fn names(req: &CertsRequest) -> Vec<String> {
    let (svc, ns) = (&req.service, &req.namespace);
    let mut names = vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    for extra in &req.extra_names {
        if !names.contains(extra) {
            names.push(extra.clone());
        }
    }
    names
}

pub fn issue(req: &CertsRequest) -> Result<Issued, CertsError> {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks behind this one.
    let not_before = now - time::Duration::minutes(5);
    let not_after = now + time::Duration::seconds(req.valid_for.as_secs() as i64);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("kubeecr-ca {}", req.namespace));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(names(req))?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", req.service, req.namespace),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (not_before, not_after);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca_pem: issuer.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The files `certs/kustomization.yaml` reads.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_BUNDLE_FILE: &str = "ca-bundle.env";

/// Writes the files into `dir`, the key readable by its owner only. Returns their paths.
pub fn write(dir: &Path, issued: &Issued, force: bool) -> Result<Vec<PathBuf>, CertsError> {
    // Only the CA just replaced, read from a file of its own (not through a link): a bundle
    // never grows past two.
    let ca_path = dir.join(CA_FILE);
    let previous = fs::symlink_metadata(&ca_path)
        .ok()
        .filter(fs::Metadata::is_file)
        .and_then(|_| fs::read_to_string(&ca_path).ok())
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----") && *pem != issued.ca_pem);
    let bundle = format!("{}{}", issued.ca_pem, previous.unwrap_or_default());
    let ca_bundle = format!("caBundle={}\n", STANDARD.encode(bundle));
    let files = [
        (CA_FILE, issued.ca_pem.as_str(), 0o644),
        (CERT_FILE, issued.cert_pem.as_str(), 0o644),
        (KEY_FILE, issued.key_pem.as_str(), 0o600),
        (CA_BUNDLE_FILE, ca_bundle.as_str(), 0o644),
    ];
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    if !force {
        for (name, _, _) in &files {
            let path = dir.join(name);
            if path.exists() {
                return Err(CertsError::Exists { path });
            }
        }
    }
    let mut written = Vec::new();
    for (name, content, mode) in files {
        let path = dir.join(name);
        // Written beside, then renamed, so a reader never sees half a file. The rename
        // replaces a link at `path` rather than writing through it.
        let partial = dir.join(format!(".{name}.partial"));
        write_file(&partial, content, mode).map_err(io(&partial))?;
        fs::rename(&partial, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Creates `path` anew at `mode`: whatever is there already (a file left by someone else,
/// with its own mode; a link to elsewhere) is removed first, and the file is created
/// exclusively, so that it is never opened through a link nor keeps another's mode.
fn write_file(path: &Path, content: &str, mode: u32) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    // O_CREAT | O_EXCL: fails on anything at `path`, a link included, rather than follow it.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CertsRequest {
        CertsRequest {
            service: "kubeecr-webhook".into(),
            namespace: "ecr".into(),
            extra_names: vec!["127.0.0.1".into(), "kubeecr-webhook".into()],
            valid_for: Duration::from_secs(86400),
        }
    }

    #[test]
    fn names_cover_every_form_the_api_server_uses_once() {
        assert_eq!(
            names(&request()),
            [
                "kubeecr-webhook",
                "kubeecr-webhook.ecr",
                "kubeecr-webhook.ecr.svc",
                "kubeecr-webhook.ecr.svc.cluster.local",
                "127.0.0.1"
            ]
        );
    }

    #[test]
    fn files_are_written_once_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(&request()).unwrap();
        let written = write(dir.path(), &issued, false).unwrap();
        assert_eq!(written.len(), 4);
        let bundle = fs::read_to_string(dir.path().join(CA_BUNDLE_FILE)).unwrap();
        let b64 = bundle.trim().strip_prefix("caBundle=").unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), issued.ca_pem.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
        let again = write(dir.path(), &issue(&request()).unwrap(), false);
        assert!(matches!(again, Err(CertsError::Exists { .. })));
        let before = fs::read_to_string(dir.path().join(CERT_FILE)).unwrap();
        assert_eq!(
            before, issued.cert_pem,
            "refused write left the files alone"
        );
        let renewed = issue(&request()).unwrap();
        write(dir.path(), &renewed, true).unwrap();
        assert_ne!(
            fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            before
        );
        // The renewed bundle trusts the new CA and the one it replaced, not older ones.
        let bundle = |dir: &Path| {
            let line = fs::read_to_string(dir.join(CA_BUNDLE_FILE)).unwrap();
            String::from_utf8(
                STANDARD
                    .decode(line.trim().strip_prefix("caBundle=").unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            bundle(dir.path()),
            format!("{}{}", renewed.ca_pem, issued.ca_pem)
        );
        let third = issue(&request()).unwrap();
        write(dir.path(), &third, true).unwrap();
        assert_eq!(
            bundle(dir.path()),
            format!("{}{}", third.ca_pem, renewed.ca_pem)
        );
    }

    /// The finding: `kubeecr certs` followed links and reused a pre-created `.partial` file
    /// with its mode, so the key could end up world-readable or in a link's target.
    #[cfg(unix)]
    #[test]
    fn files_are_created_anew_never_through_a_link() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("stolen");
        fs::write(&target, "untouched").unwrap();
        // A link where the key's partial file goes, a world-readable file where the
        // certificate's goes, and a link in place of the key itself.
        symlink(&target, dir.path().join(".tls.key.partial")).unwrap();
        fs::write(dir.path().join(".tls.crt.partial"), "x").unwrap();
        fs::set_permissions(
            dir.path().join(".tls.crt.partial"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        symlink(&target, dir.path().join(KEY_FILE)).unwrap();
        symlink(&target, dir.path().join(CA_FILE)).unwrap();
        let issued = issue(&request()).unwrap();
        write(dir.path(), &issued, true).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
        let key = dir.path().join(KEY_FILE);
        let meta = fs::symlink_metadata(&key).unwrap();
        assert!(meta.is_file(), "a file of its own, not a link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&key).unwrap(), issued.key_pem);
        // Not the 0666 of the file that was there: its own mode (0644 less the umask).
        let cert = fs::symlink_metadata(dir.path().join(CERT_FILE)).unwrap();
        assert_eq!(cert.permissions().mode() & 0o133, 0);
        // The link at ca.crt was not read as the previous CA.
        let bundle = fs::read_to_string(dir.path().join(CA_BUNDLE_FILE)).unwrap();
        let b64 = bundle.trim().strip_prefix("caBundle=").unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), issued.ca_pem.as_bytes());
    }

    /// The files serve TLS for the Service's name to a client that trusts only `ca.crt`.
    #[test]
    fn a_client_trusting_the_ca_completes_a_handshake_for_the_service_name() {
        use std::sync::Arc;

        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};

        use crate::servers::tls::{CertReloader, TlsFiles, install_crypto_provider, server_config};

        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(&request()).unwrap();
        write(dir.path(), &issued, false).unwrap();
        let reloader = CertReloader::load(TlsFiles {
            cert: dir.path().join(CERT_FILE),
            key: dir.path().join(KEY_FILE),
            client_ca: None,
        })
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.path().join(CA_FILE)).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client_config = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let handshake = |name: &'static str| -> Result<(), rustls::Error> {
            let mut client = rustls::ClientConnection::new(
                Arc::clone(&client_config),
                ServerName::try_from(name).unwrap(),
            )?;
            let mut server = rustls::ServerConnection::new(server_config(reloader.store(), None))?;
            for _ in 0..10 {
                let mut buf = Vec::new();
                client.write_tls(&mut buf).unwrap();
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets()?;
                let mut buf = Vec::new();
                server.write_tls(&mut buf).unwrap();
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets()?;
                if !client.is_handshaking() && !server.is_handshaking() {
                    return Ok(());
                }
            }
            panic!("handshake did not finish")
        };
        handshake("kubeecr-webhook.ecr.svc").unwrap();
        handshake("127.0.0.1").unwrap();
        let wrong = handshake("kubeecr-webhook.other.svc").unwrap_err();
        assert!(
            matches!(wrong, rustls::Error::InvalidCertificate(_)),
            "{wrong:?}"
        );
    }
}
