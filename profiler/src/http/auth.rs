//! HTTP basic auth against the web config's users (bcrypt hashes). Successful verifications are
//! remembered, so a scraper pays bcrypt's deliberate cost once, not on every request.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::web::WebConfig;

/// Successful verifications remembered, so a scraper pays bcrypt's deliberate cost once, not on
/// every request. Bounded; emptied when full.
const AUTH_CACHE_MAX: usize = 1024;

/// A web config in force, with the verifications it has granted.
pub struct Guard {
    pub config: WebConfig,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Guard {
    fn new(config: WebConfig) -> Guard {
        Guard {
            config,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether an `Authorization` header value grants access. Runs bcrypt, which is slow on
    /// purpose: call it off the async workers.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        if !self.config.requires_auth() {
            return true;
        }
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let Some(hash) = self.config.hash_of(&user) else {
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

/// The web config in force; SIGHUP swaps it (and so empties the cache).
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<Guard>>>);

impl Shared {
    pub fn new(w: WebConfig) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(Guard::new(w)))))
    }

    pub fn get(&self) -> Arc<Guard> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, w: WebConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Guard::new(w));
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

pub async fn authenticate(State(web): State<Shared>, req: Request, next: Next) -> Response {
    let config = web.get();
    if config.config.requires_auth() {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        // bcrypt takes tens of milliseconds by design: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || config.authorized(header.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"syscall-profiler\"")],
                Json(json!({"error": "authentication required"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

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
        let w = Guard::new(WebConfig::load(&p).unwrap());
        assert!(w.config.tls.is_none());
        assert!(w.authorized(Some(&basic("alice", "s3cret"))));
        assert!(w.authorized(Some(&basic("alice", "s3cret"))), "cached");
        assert!(!w.authorized(Some(&basic("alice", "wrong"))));
        assert!(!w.authorized(Some(&basic("bob", "s3cret"))));
        assert!(!w.authorized(None));
        assert!(!w.authorized(Some(b"Bearer abc")));
        assert!(!w.authorized(Some(b"Basic !!!")));
        assert!(Guard::new(WebConfig::open()).authorized(None));
    }
}
