//! A daemon's TLS and basic-auth set-up, made here: a self-signed certificate for 127.0.0.1 and
//! a web config naming it, with one user, alice.

use std::path::PathBuf;

pub struct TlsSetup {
    /// Holds the files; more can go in it (credentials files).
    pub dir: tempfile::TempDir,
    /// The web config (`--web-config`).
    pub web: PathBuf,
    /// The certificate, which is its own CA (`--ca-file`).
    pub ca: PathBuf,
    pub ca_pem: String,
}

/// The certificate, its key and a web config with TLS and user alice of `password`.
pub fn setup(password: &str) -> TlsSetup {
    let dir = tempfile::tempdir().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    // Cost 4 keeps the tests fast; the daemon accepts any bcrypt cost.
    let hash = bcrypt::hash(password, 4).unwrap();
    let web = dir.path().join("web.toml");
    std::fs::write(
        &web,
        format!(
            "[tls_server_config]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n\n\
             [basic_auth_users]\nalice = \"{hash}\"\n"
        ),
    )
    .unwrap();
    TlsSetup {
        ca: dir.path().join("server.crt"),
        ca_pem: cert.pem(),
        web,
        dir,
    }
}
