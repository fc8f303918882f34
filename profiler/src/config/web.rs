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

use super::{
    error::Error,
    parse::clip,
    sources::{read_capped, read_text, syntax_error},
};

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

    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        const WHAT: &str = "web config file";
        let text = read_text(WHAT, path)?;
        let raw: RawWebConfig =
            toml::from_str(&text).map_err(|e| syntax_error(WHAT, path, &text, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = raw
            .tls_server_config
            .map(|t| tls_config(path, &dir.join(&t.cert_file), &dir.join(&t.key_file)))
            .transpose()?;
        let users = raw.basic_auth_users;
        for (user, hash) in &users {
            if user.is_empty() || user.contains(':') {
                return Err(Error::UserName {
                    path: path.to_path_buf(),
                    user: clip(user),
                });
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| Error::Hash {
                path: path.to_path_buf(),
                user: clip(user),
                why: clip(&e.to_string()),
            })?;
        }
        Ok(WebConfig { tls, users })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The bcrypt hash of `user`'s password.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
}

/// The TLS server config of the certificate and key files the web config file `path` names.
fn tls_config(path: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let file_error = |field, file: &Path| {
        let (path, file) = (path.to_path_buf(), file.to_path_buf());
        move |e: &dyn std::fmt::Display| Error::TlsFile {
            path,
            field,
            file,
            why: clip(&e.to_string()),
        }
    };
    let cert_pem = read_capped(cert).map_err(|e| file_error("cert_file", cert)(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("cert_file", cert)(&e))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_path_buf(),
            file: cert.to_path_buf(),
        });
    }
    let key_pem = read_capped(key).map_err(|e| file_error("key_file", key)(&e))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| file_error("key_file", key)(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            path: path.to_path_buf(),
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| Error::KeyMismatch {
            path: path.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error as the daemon prints it: with its causes, on one line.
    fn printed(e: Error) -> String {
        format!("{:#}", anyhow::Error::new(e))
    }

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
            let e = printed(WebConfig::load(&p).err().expect(text));
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
        let e = printed(WebConfig::load(&p).err().unwrap());
        assert!(e.contains("do not fit"), "{e}");
    }
}
