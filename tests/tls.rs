//! HTTPS to a store with a private CA: the embedded store serves TLS with a certificate
//! signed by a CA this test makes; `--ca-bundle` (or `AWS_CA_BUNDLE`) trusts it, and
//! without it the mount fails at start naming the endpoint, never falling back to HTTP.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use common::{rgrid_mount, Endpoint, Mount};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rgrid_mount::store::{EmbeddedStore, TlsIdentity};

/// The embedded store over HTTPS, and the CA that signed its certificate.
struct TlsStore {
    store: EmbeddedStore,
    dir: tempfile::TempDir,
    ca: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Endpoint for TlsStore {
    fn url(&self) -> &str {
        &self.store.endpoint
    }
    fn keys(&self) -> (&str, &str) {
        (&self.store.access_key, &self.store.secret_key)
    }
}

fn tls_store() -> TlsStore {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rgrid test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let root = dir.path().join("store");
    let seeded = root.join(common::BUCKET).join("d/in.txt");
    std::fs::create_dir_all(seeded.parent().unwrap()).unwrap();
    std::fs::write(&seeded, "over https\n").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let identity = TlsIdentity {
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        host: "localhost".into(),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let start = EmbeddedStore::start_tls(&root, common::BUCKET, addr, &identity);
    let store = runtime.block_on(start).unwrap();
    assert!(store.endpoint.starts_with("https://localhost:"));
    TlsStore {
        store,
        dir,
        ca,
        _runtime: runtime,
    }
}

#[test]
fn a_private_ca_is_trusted_with_ca_bundle_and_aws_ca_bundle() {
    let store = tls_store();
    let ca = store.ca.to_str().unwrap();
    let mount = Mount::new(&store, &["--ca-bundle", ca]);
    assert_eq!(
        std::fs::read_to_string(mount.join("d/in.txt")).unwrap(),
        "over https\n"
    );
    std::fs::write(mount.join("d/out.txt"), "back\n").unwrap();
    let stored = store
        .dir
        .path()
        .join("store")
        .join(common::BUCKET)
        .join("d/out.txt");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), "back\n");
    // Parts go up unsigned over HTTPS (TLS protects them), and arrive whole.
    let big = common::pseudo_random(20 << 20, 7);
    std::fs::write(mount.join("d/big.bin"), &big).unwrap();
    let stored = store
        .dir
        .path()
        .join("store")
        .join(common::BUCKET)
        .join("d/big.bin");
    assert!(std::fs::read(stored).unwrap() == big);
    drop(mount);

    let mut cmd = rgrid_mount(&store);
    cmd.env("AWS_CA_BUNDLE", ca);
    let mount = Mount::spawn(cmd).unwrap_or_else(|(s, log)| panic!("{s}: {log}"));
    assert_eq!(
        std::fs::read_to_string(mount.join("d/in.txt")).unwrap(),
        "over https\n"
    );
}

#[test]
fn a_certificate_that_does_not_verify_fails_the_mount_naming_the_endpoint() {
    let store = tls_store();
    let started = std::time::Instant::now();
    let (status, log) = match Mount::try_new(&store, &[]) {
        Ok(_) => panic!("mounted a store whose certificate does not verify"),
        Err(failed) => failed,
    };
    assert!(!status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(log.contains(&store.store.endpoint), "{log}");
    assert!(log.contains("does not verify"), "{log}");

    let bad = store.dir.path().join("not-a-bundle.pem");
    std::fs::write(&bad, "hello").unwrap();
    let (_, log) = Mount::try_new(&store, &["--ca-bundle", bad.to_str().unwrap()])
        .err()
        .expect("a bundle without certificates is refused");
    assert!(log.contains("holds no PEM certificate"), "{log}");
}
