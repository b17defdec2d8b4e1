//! A real registry client reads what kubeecr writes: the distribution registry (Debian's
//! `docker-registry`) over TLS with htpasswd auth for `AWS` and a token kubeecr wrote, and
//! Debian's `skopeo`, given kubeecr's `.dockerconfigjson` as `--authfile`.
//!
//! Both run in a network namespace of the test's own, whose `/etc/hosts`
//! (`/etc/netns/<name>/hosts`) sends the ECR host names to its loopback, so the client asks
//! for the real names and the registry answers on port 443 as ECR does. The same registry
//! checks a basic-auth Secret's username and password, as `skopeo --creds` takes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::tls::TestCa;
use serde_json::{Value, json};

use crate::common::*;
use crate::install::tool_present;

const STANDARD_HOST: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const FIPS_HOST: &str = "111111111111.dkr.ecr-fips.us-east-1.amazonaws.com";

/// `sudo -n` when not root: namespaces and port 443 need it.
fn privileged(program: &str) -> Command {
    let root = rustix::process::geteuid().is_root();
    let mut cmd = Command::new(if root { program } else { "sudo" });
    if !root {
        cmd.args(["-n", program]);
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether skopeo, the registry and network namespaces are all here.
fn tools_present() -> bool {
    let has = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let namespaces = privileged("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool_present(
        has("skopeo", "--version") && has("docker-registry", "--version") && namespaces,
        "skopeo, docker-registry (Debian packages skopeo, docker-registry) or `ip netns` as root",
    )
}

/// The registry, serving `hosts` in its own network namespace, for user `AWS` with `password`.
struct Registry {
    netns: String,
    dir: tempfile::TempDir,
    server: Child,
}

impl Registry {
    fn start(hosts: &[&str], password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let netns = format!("kubeecr-reg-{}", std::process::id());
        let _ = run(privileged("ip").args(["netns", "del", &netns]));
        ok(privileged("ip").args(["netns", "add", &netns]));
        ok(privileged("ip").args(["netns", "exec", &netns, "ip", "link", "set", "lo", "up"]));
        let etc = PathBuf::from("/etc/netns").join(&netns);
        ok(privileged("mkdir").args(["-p", etc.to_str().unwrap()]));
        let hosts_file = dir.path().join("hosts");
        std::fs::write(
            &hosts_file,
            format!("127.0.0.1 localhost {}\n", hosts.join(" ")),
        )
        .unwrap();
        ok(privileged("cp").args([
            hosts_file.to_str().unwrap(),
            etc.join("hosts").to_str().unwrap(),
        ]));

        let ca = TestCa::new("registry test CA");
        let serving = ca.serving_for(hosts[0], false, hosts);
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        // skopeo's --cert-dir: every *.crt in it is a CA it trusts.
        std::fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &serving.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &serving.key_pem).unwrap();
        let hash = bcrypt::hash(password, 4).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("AWS:{hash}\n")).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:443\n  tls:\n    certificate: {dir}/tls.crt\n    key: {dir}/tls.key\nauth:\n  htpasswd:\n    realm: ecr\n    path: {dir}/htpasswd\n",
            root = dir.path().join("storage").display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let server = privileged("ip")
            .args(["netns", "exec", &netns, "docker-registry", "serve"])
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let registry = Self { netns, dir, server };
        registry.wait_listening();
        registry
    }

    fn wait_listening(&self) {
        for _ in 0..100 {
            let up = privileged("ip")
                .args(["netns", "exec", &self.netns, "bash", "-c"])
                .arg("exec 3<>/dev/tcp/127.0.0.1/443")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the registry did not listen: {}",
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// skopeo in the namespace, trusting the registry's CA.
    fn skopeo(&self, args: &[&str]) -> Output {
        let certs = self.dir.path().join("certs");
        let mut cmd = privileged("ip");
        cmd.args(["netns", "exec", &self.netns, "skopeo", "--insecure-policy"]);
        let (verb, rest) = args.split_first().unwrap();
        cmd.arg(verb);
        match *verb {
            "copy" => cmd.arg("--dest-cert-dir").arg(&certs),
            _ => cmd.arg("--cert-dir").arg(&certs),
        };
        cmd.args(rest);
        run(&mut cmd)
    }

    /// Pushes a one-layer image, as `AWS` with `password`.
    fn push(&self, image: &str, password: &str) {
        let layout = oci_layout(self.dir.path());
        let out = self.skopeo(&[
            "copy",
            "--dest-creds",
            &format!("AWS:{password}"),
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{image}"),
        ]);
        assert!(
            out.status.success(),
            "push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect` with `config` as its authfile.
    fn inspect_with_authfile(&self, image: &str, config: &Value) -> Result<Value, String> {
        let authfile = self.dir.path().join("auth.json");
        std::fs::write(&authfile, serde_json::to_vec(config).unwrap()).unwrap();
        let out = self.skopeo(&[
            "inspect",
            "--authfile",
            authfile.to_str().unwrap(),
            &format!("docker://{image}"),
        ]);
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // The child is `ip netns exec` (or sudo); the registry under it goes with the
        // namespace's processes.
        let pids = run(privileged("ip").args(["netns", "pids", &self.netns])).stdout;
        for pid in String::from_utf8_lossy(&pids).split_whitespace() {
            let _ = run(privileged("kill").arg(pid));
        }
        let _ = run(privileged("ip").args(["netns", "del", &self.netns]));
        let _ = run(privileged("rm").args([
            "-rf",
            Path::new("/etc/netns").join(&self.netns).to_str().unwrap(),
        ]));
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI image layout with one empty layer, tagged `latest`.
fn oci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("image");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let hex = sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    // An empty tar archive: two zero blocks.
    let layer = vec![0u8; 1024];
    let (layer_digest, layer_size) = blob(&layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {},
    });
    let (config_digest, config_size) = blob(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// kubeecr fills a Secret (standard and FIPS hosts, beside foreign entries in the `https://`
/// and path forms); skopeo pulls with what it wrote, through either host, and is refused with
/// the token it held before its renewal.
#[tokio::test]
async fn skopeo_pulls_with_what_kubeecr_wrote_and_not_with_a_stale_token() {
    if !tools_present() {
        return;
    }
    let ecr = EcrProxy::start().await;
    let cluster = TestCluster::double().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let foreign = json!({"auths": {
        format!("https://{STANDARD_HOST}"): {"username": "AWS", "password": "stale-by-hand"},
        format!("{STANDARD_HOST}/other-team"): {"auth": "b3RoZXI6dGVhbQ=="},
        "quay.io": {"auth": "cTpx"},
    }});
    create(
        &client,
        ns,
        &secret(
            "pull",
            DOCKER_CONFIG_JSON,
            &[
                (ANNOTATION, "111111111111/us-east-1"),
                ("deft.com/kubeecr-hosts", "standard,fips"),
            ],
            &[(".dockerconfigjson", &serde_json::to_vec(&foreign).unwrap())],
        ),
    )
    .await;
    // The same registry for a tool that reads basic auth.
    create(
        &client,
        ns,
        &secret(
            "basic",
            "kubernetes.io/basic-auth",
            &[(ANNOTATION, "111111111111/us-east-1")],
            &[("username", b"someone")],
        ),
    )
    .await;
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(summary.refreshed, 2, "{summary:?}");
    let stale = dockerconfig(&get(&client, ns, "pull").await);
    let stale_basic = data_bytes(&get(&client, ns, "basic").await, "password").unwrap();
    let forced = force_refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(forced.refreshed, 2, "{forced:?}");
    let fresh = dockerconfig(&get(&client, ns, "pull").await);
    let token = ecr.newest("us-east-1", None).unwrap().password;
    assert_eq!(password_of(&fresh, STANDARD_HOST), token);
    assert_eq!(
        fresh["auths"][format!("{STANDARD_HOST}/other-team")],
        foreign["auths"][format!("{STANDARD_HOST}/other-team")],
        "the path-scoped entry is someone else's"
    );

    let registry = Registry::start(&[STANDARD_HOST, FIPS_HOST], &token);
    registry.push(&format!("{STANDARD_HOST}/app:1"), &token);
    // basic-auth, as `skopeo --creds` takes it.
    let basic = get(&client, ns, "basic").await;
    let creds = |password: &[u8]| {
        format!(
            "{}:{}",
            String::from_utf8(data_bytes(&basic, "username").unwrap()).unwrap(),
            String::from_utf8(password.to_vec()).unwrap()
        )
    };
    let image = format!("{STANDARD_HOST}/app:1");
    let fresh_basic = data_bytes(&basic, "password").unwrap();
    let out = registry.skopeo(&[
        "inspect",
        "--creds",
        &creds(&fresh_basic),
        &format!("docker://{image}"),
    ]);
    assert!(
        out.status.success(),
        "basic-auth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = registry.skopeo(&[
        "inspect",
        "--creds",
        &creds(&stale_basic),
        &format!("docker://{image}"),
    ]);
    assert!(
        !out.status.success(),
        "the stale basic-auth password is refused"
    );
    for host in [STANDARD_HOST, FIPS_HOST] {
        let image = format!("{host}/app:1");
        let inspected = registry
            .inspect_with_authfile(&image, &fresh)
            .unwrap_or_else(|e| panic!("{image} with kubeecr's config: {e}"));
        assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
        let refused = registry
            .inspect_with_authfile(&image, &stale)
            .expect_err("the token before the renewal is refused");
        assert!(
            refused.contains("unauthorized") || refused.contains("401"),
            "{refused}"
        );
    }
}
