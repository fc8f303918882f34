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
    /// Absent and empty differ: absent serves without authentication, empty is refused.
    basic_auth_users: Option<BTreeMap<String, String>>,
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
        let users = match raw.basic_auth_users {
            None => BTreeMap::new(),
            Some(users) if users.is_empty() => {
                return Err(Error::NoUsers {
                    path: path.to_path_buf(),
                })
            }
            Some(users) => users,
        };
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

    /// What a reload from `self` to `new` changes in who may connect, for the log; `None` if
    /// nothing. Names users, never hashes.
    pub fn auth_change(&self, new: &WebConfig) -> Option<String> {
        let names = |users: &BTreeMap<String, String>| {
            users.keys().map(|u| clip(u)).collect::<Vec<_>>().join(", ")
        };
        match (self.requires_auth(), new.requires_auth()) {
            (false, false) => None,
            (true, false) => Some("basic auth turned off: every client is served".into()),
            (false, true) => Some(format!("basic auth turned on: users {}", names(&new.users))),
            (true, true) => {
                let mut parts = Vec::new();
                let list = |users: Vec<&String>| {
                    users.iter().map(|u| clip(u)).collect::<Vec<_>>().join(", ")
                };
                let added: Vec<&String> = new
                    .users
                    .keys()
                    .filter(|u| !self.users.contains_key(*u))
                    .collect();
                let removed: Vec<&String> = self
                    .users
                    .keys()
                    .filter(|u| !new.users.contains_key(*u))
                    .collect();
                let rehashed: Vec<&String> = new
                    .users
                    .iter()
                    .filter(|(u, h)| self.users.get(*u).is_some_and(|old| old != *h))
                    .map(|(u, _)| u)
                    .collect();
                for (what, users) in [
                    ("added", added),
                    ("removed", removed),
                    ("new password", rehashed),
                ] {
                    if !users.is_empty() {
                        parts.push(format!("{what}: {}", list(users)));
                    }
                }
                (!parts.is_empty())
                    .then(|| format!("basic auth users changed: {}", parts.join("; ")))
            }
        }
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

    #[test]
    fn an_empty_users_table_is_refused_not_read_as_no_authentication() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["[basic_auth_users]\n", "basic_auth_users = {}\n"] {
            let p = write(dir.path(), "web.toml", text);
            let e = printed(WebConfig::load(&p).err().expect(text));
            assert_eq!(
                e,
                format!(
                    "web config file {}: [basic_auth_users] is empty, which would turn \
                     authentication off (remove the table to serve without authentication)",
                    p.display()
                )
            );
        }
        // Without the table: no authentication, as documented.
        let p = write(dir.path(), "web.toml", "");
        assert!(!WebConfig::load(&p).unwrap().requires_auth());
    }

    #[test]
    fn a_change_of_who_may_connect_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |pw| bcrypt::hash(pw, 4).unwrap();
        let users = |pairs: &[(&str, &str)]| {
            let mut text = String::from("[basic_auth_users]\n");
            for (u, h) in pairs {
                text.push_str(&format!("{u} = \"{h}\"\n"));
            }
            WebConfig::load(&write(dir.path(), "web.toml", &text)).unwrap()
        };
        let (a, b, c) = (hash("a"), hash("b"), hash("c"));
        let open = WebConfig::open();
        let alice = users(&[("alice", &a)]);
        assert_eq!(open.auth_change(&WebConfig::open()), None);
        assert_eq!(
            open.auth_change(&alice).as_deref(),
            Some("basic auth turned on: users alice")
        );
        assert_eq!(
            alice.auth_change(&open).as_deref(),
            Some("basic auth turned off: every client is served")
        );
        assert_eq!(alice.auth_change(&users(&[("alice", &a)])), None);
        assert_eq!(
            alice
                .auth_change(&users(&[("alice", &c), ("bob", &b)]))
                .as_deref(),
            Some("basic auth users changed: added: bob; new password: alice")
        );
        assert_eq!(
            users(&[("alice", &a), ("bob", &b)])
                .auth_change(&users(&[("bob", &b)]))
                .as_deref(),
            Some("basic auth users changed: removed: alice")
        );
    }
}
