//! The web configuration file: TLS and HTTP basic auth, with the key names of Prometheus
//! exporter-toolkit's web-config (`tls_server_config.cert_file`/`key_file`,
//! `basic_auth_users` mapping user names to bcrypt hashes), written in TOML:
//!
//! ```toml
//! [tls_server_config]
//! cert_file = "server.crt"   # relative paths are relative to this file
//! key_file = "server.key"
//!
//! [basic_auth_users]
//! alice = "$2y$10$..."        # htpasswd -nBC 10 alice
//! ```
//!
//! Checking a request against the users is http/auth.rs' work.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ServerConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    /// User name → bcrypt hash.
    users: BTreeMap<String, String>,
}

impl WebConfig {
    /// No TLS, no authentication.
    pub fn open() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
        }
    }

    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let name = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read web config file {name}: {e}"))?;
        let raw: RawWebConfig = toml::from_str(&text).map_err(|e| {
            crate::config::sources::toml_error(path, &text, &e).replacen(
                "config file",
                "web config file",
                1,
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = raw
            .tls_server_config
            .map(|t| {
                let cert = dir.join(&t.cert_file);
                let key = dir.join(&t.key_file);
                tls_config(&cert, &key).map_err(|e| format!("web config file {name}: {e}"))
            })
            .transpose()?;
        for (user, hash) in &raw.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "web config file {name}, basic_auth_users: '{user}' is not a user name \
                     (empty, or contains ':')"
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!("web config file {name}, basic_auth_users.{user}: not a bcrypt hash: {e}")
            })?;
        }
        Ok(WebConfig {
            tls,
            users: raw.basic_auth_users,
        })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The bcrypt hash of `user`'s password.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                "[basic_auth_users]\nalice = \"plain\"\n",
                "basic_auth_users.alice",
            ),
            (
                "[tls_server_config]\ncert_file = \"nope.crt\"\nkey_file = \"nope.key\"\n",
                "cert_file",
            ),
            ("[tls_server_config]\ncert_file = \"a\"\n", "key_file"),
            ("bogus = 1\n", "bogus"),
        ] {
            let p = write(dir.path(), "web.toml", text);
            let e = WebConfig::load(&p).err().expect(text);
            assert!(e.contains(needle), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn tls_from_a_generated_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        write(dir.path(), "c.pem", &cert.cert.pem());
        write(dir.path(), "k.pem", &cert.signing_key.serialize_pem());
        let p = write(
            dir.path(),
            "web.toml",
            "[tls_server_config]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        );
        let w = WebConfig::load(&p).unwrap();
        assert!(w.tls.is_some());
        assert!(!w.requires_auth());
        // A key that does not belong to the certificate is refused at load.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        write(dir.path(), "k.pem", &other.signing_key.serialize_pem());
        let e = WebConfig::load(&p).err().unwrap();
        assert!(e.contains("do not fit"), "{e}");
    }
}
