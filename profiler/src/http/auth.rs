//! HTTP basic auth against the web config's users (bcrypt hashes). Verdicts are remembered, by a
//! SHA-256 of user, password and hash: a scraper pays bcrypt's deliberate cost once, not on every
//! request, and so does a wrong password sent again and again. Only credentials seen for the
//! first time reach bcrypt, on its own bounded thread (verifier.rs).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::Response,
};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{
    errors::json_error,
    verifier::{Busy, Verifier},
};
use crate::config::web::WebConfig;

/// Verdicts remembered, each way. Bounded; a full set is emptied.
const GRANTED_MAX: usize = 1024;
const REFUSED_MAX: usize = 4096;
/// bcrypt reads this many bytes of a password and ignores the rest.
const BCRYPT_MAX_PASSWORD: usize = 72;

type Key = [u8; 32];

/// A web config in force, with the verdicts it has given.
pub struct Guard {
    pub config: WebConfig,
    granted: Mutex<HashSet<Key>>,
    refused: Mutex<HashSet<Key>>,
}

/// What the header and the remembered verdicts say, before any bcrypt.
enum Precheck {
    Granted,
    Refused(&'static str),
    /// Seen for the first time: bcrypt must say.
    Verify(Claim),
}

/// Credentials to check with bcrypt.
struct Claim {
    key: Key,
    password: Vec<u8>,
    /// None for a user the config does not name.
    hash: Option<String>,
}

impl Claim {
    /// bcrypt's verdict. An unknown user costs as much as a known one, so response times do
    /// not tell which user names exist.
    fn verify(&self) -> bool {
        match &self.hash {
            Some(hash) => bcrypt::verify(&self.password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&self.password, dummy_hash());
                false
            }
        }
    }
}

const NO_CREDENTIALS: &str = "authentication required";
const WRONG: &str = "wrong user name or password";
const TOO_LONG: &str = "the password is longer than 72 bytes: bcrypt ignores what follows, so \
                        such passwords are refused";

impl Guard {
    fn new(config: WebConfig) -> Guard {
        Guard {
            config,
            granted: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
        }
    }

    fn precheck(&self, header: Option<&[u8]>) -> Precheck {
        if !self.config.requires_auth() {
            return Precheck::Granted;
        }
        let Some((user, password)) = header.and_then(parse_basic) else {
            return Precheck::Refused(NO_CREDENTIALS);
        };
        if password.len() > BCRYPT_MAX_PASSWORD {
            return Precheck::Refused(TOO_LONG);
        }
        let hash = self.config.hash_of(&user).map(str::to_string);
        let key: Key = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(&password)
            .chain_update([0])
            .chain_update(hash.as_deref().unwrap_or("").as_bytes())
            .finalize()
            .into();
        match self.remembered(&key) {
            Some(true) => Precheck::Granted,
            Some(false) => Precheck::Refused(WRONG),
            None => Precheck::Verify(Claim {
                key,
                password,
                hash,
            }),
        }
    }

    fn remembered(&self, key: &Key) -> Option<bool> {
        let lock =
            |s: &Mutex<HashSet<Key>>| s.lock().unwrap_or_else(|e| e.into_inner()).contains(key);
        if lock(&self.granted) {
            Some(true)
        } else if lock(&self.refused) {
            Some(false)
        } else {
            None
        }
    }

    fn remember(&self, key: Key, granted: bool) {
        let (set, max) = match granted {
            true => (&self.granted, GRANTED_MAX),
            false => (&self.refused, REFUSED_MAX),
        };
        let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= max {
            set.clear();
        }
        set.insert(key);
    }

    /// bcrypt's verdict on `claim`, remembered; another check of the same credentials may have
    /// given it while this one waited.
    fn settle(&self, claim: Claim) -> bool {
        if let Some(known) = self.remembered(&claim.key) {
            return known;
        }
        let granted = claim.verify();
        self.remember(claim.key, granted);
        granted
    }
}

/// A hash at cost 10, the cost `htpasswd -B` uses by default, to verify unknown users against.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("no such user", 10).unwrap_or_default())
}

/// The web config in force (SIGHUP swaps it, and so forgets the verdicts) and the thread that
/// checks passwords.
#[derive(Clone)]
pub struct Shared {
    guard: Arc<RwLock<Arc<Guard>>>,
    verifier: Arc<Verifier>,
}

impl Shared {
    pub fn new(w: WebConfig) -> std::io::Result<Shared> {
        Ok(Shared {
            guard: Arc::new(RwLock::new(Arc::new(Guard::new(w)))),
            verifier: Arc::new(Verifier::start()?),
        })
    }

    pub fn get(&self) -> Arc<Guard> {
        self.guard.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, w: WebConfig) {
        *self.guard.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Guard::new(w));
    }

    /// Whether an `Authorization` header value grants access; Err when too many passwords wait
    /// to be checked.
    async fn authorized(&self, header: Option<&[u8]>) -> Result<Result<(), &'static str>, Busy> {
        let guard = self.get();
        match guard.precheck(header) {
            Precheck::Granted => Ok(Ok(())),
            Precheck::Refused(why) => Ok(Err(why)),
            Precheck::Verify(claim) => {
                let granted = self.verifier.run(move || guard.settle(claim)).await?;
                Ok(if granted { Ok(()) } else { Err(WRONG) })
            }
        }
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

pub async fn authenticate(State(auth): State<Shared>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.authorized(header).await {
        Ok(Ok(())) => next.run(req).await,
        Ok(Err(why)) => {
            let mut refusal = json_error(StatusCode::UNAUTHORIZED, why);
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"syscall-profiler\""),
            );
            refusal
        }
        Err(Busy) => {
            let mut refusal = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many password checks are waiting: try again in a second",
            );
            refusal
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            refusal
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    fn guard(dir: &Path, password: &str) -> Guard {
        let hash = bcrypt::hash(password, 4).unwrap();
        let p = dir.join("web.toml");
        std::fs::write(&p, format!("[basic_auth_users]\nalice = \"{hash}\"\n")).unwrap();
        Guard::new(WebConfig::load(&p).unwrap())
    }

    /// The verdict as the middleware would reach it, bcrypt run here.
    fn granted(g: &Guard, header: Option<&[u8]>) -> bool {
        match g.precheck(header) {
            Precheck::Granted => true,
            Precheck::Refused(_) => false,
            Precheck::Verify(claim) => g.settle(claim),
        }
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), "s3cret");
        assert!(g.config.tls.is_none());
        assert!(granted(&g, Some(&basic("alice", "s3cret"))));
        assert!(granted(&g, Some(&basic("alice", "s3cret"))), "cached");
        assert!(!granted(&g, Some(&basic("alice", "wrong"))));
        assert!(!granted(&g, Some(&basic("bob", "s3cret"))));
        assert!(!granted(&g, None));
        assert!(!granted(&g, Some(b"Bearer abc")));
        assert!(!granted(&g, Some(b"Basic !!!")));
        assert!(granted(&Guard::new(WebConfig::open()), None));
    }

    #[test]
    fn verdicts_are_remembered_both_ways_so_bcrypt_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(dir.path(), "s3cret");
        for (user, pass, verdict) in [
            ("alice", "s3cret", true),
            ("alice", "no", false),
            ("eve", "x", false),
        ] {
            let Precheck::Verify(claim) = g.precheck(Some(&basic(user, pass))) else {
                panic!("{user}:{pass} checked before");
            };
            assert_eq!(g.settle(claim), verdict);
            let again = g.precheck(Some(&basic(user, pass)));
            assert!(
                matches!(
                    (again, verdict),
                    (Precheck::Granted, true) | (Precheck::Refused(WRONG), false)
                ),
                "{user}:{pass} is answered without bcrypt the second time"
            );
        }
    }

    #[test]
    fn passwords_past_72_bytes_are_refused_before_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let right = "p".repeat(72);
        let g = guard(dir.path(), &right);
        assert!(granted(&g, Some(&basic("alice", &right))));
        let longer = format!("{right}!");
        assert!(matches!(
            g.precheck(Some(&basic("alice", &longer))),
            Precheck::Refused(TOO_LONG)
        ));
    }

    #[test]
    fn full_sets_of_verdicts_are_emptied_not_grown() {
        let g = Guard::new(WebConfig::open());
        for i in 0..REFUSED_MAX + 10 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            g.remember(key, false);
        }
        assert!(g.refused.lock().unwrap().len() <= REFUSED_MAX);
    }
}
