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

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use base64::Engine;
use rustls::ServerConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

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

/// Successful verifications remembered, so a scraper pays bcrypt's deliberate cost once, not on
/// every request. Bounded; emptied when full.
const AUTH_CACHE_MAX: usize = 1024;

pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl WebConfig {
    /// No TLS, no authentication.
    pub fn open() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
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
            verified: Mutex::new(HashSet::new()),
        })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value grants access. Runs bcrypt, which is slow on
    /// purpose: call it off the async workers.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        if !self.requires_auth() {
            return true;
        }
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            // Spend the same time as for a known user, so response times do not tell which
            // user names exist.
            let _ = bcrypt::verify(&password, dummy_hash());
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(&password)
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.contains(&key) {
            return true;
        }
        drop(cache);
        if !bcrypt::verify(&password, hash).unwrap_or(false) {
            return false;
        }
        cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= AUTH_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key);
        true
    }
}

/// A hash at cost 10, the cost `htpasswd -B` uses by default, to verify unknown users against.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("no such user", 10).unwrap_or_default())
}

/// The web config in force; SIGHUP swaps it.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<WebConfig>>>);

impl Shared {
    pub fn new(w: WebConfig) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(w))))
    }

    pub fn get(&self) -> Arc<WebConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, w: WebConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(w);
    }
}

/// `Basic base64(user:password)` → (user, password bytes).
fn parse_basic(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, creds) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
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

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let p = write(
            dir.path(),
            "web.toml",
            &format!("[basic_auth_users]\nalice = \"{hash}\"\n"),
        );
        let w = WebConfig::load(&p).unwrap();
        assert!(w.tls.is_none());
        assert!(w.authorized(Some(&basic("alice", "s3cret"))));
        assert!(w.authorized(Some(&basic("alice", "s3cret"))), "cached");
        assert!(!w.authorized(Some(&basic("alice", "wrong"))));
        assert!(!w.authorized(Some(&basic("bob", "s3cret"))));
        assert!(!w.authorized(None));
        assert!(!w.authorized(Some(b"Bearer abc")));
        assert!(!w.authorized(Some(b"Basic !!!")));
        assert!(WebConfig::open().authorized(None));
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
