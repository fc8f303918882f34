//! top's HTTP client: one keep-alive agent (one TLS handshake, not one a refresh), basic-auth
//! credentials from a file or the environment (never the command line, where `ps` shows them),
//! a private CA, answers read up to a cap, and failures as one line that says what to do.

use std::{
    error::Error as _,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use serde_json::Value;

use crate::config::{
    declare::{ENV_PASSWORD, ENV_USER},
    sources::read_capped,
};

/// A narrow query's answer is tens of KiB; this only stops a wrong URL (or a daemon answering
/// an unfiltered query) from growing top to the size of the answer.
const ANSWER_MAX_BYTES: u64 = 8 << 20;

/// How long a request may take before its refresh gives up and says so.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: 401 Unauthorized: {why}")]
    Unauthorized { url: String, why: &'static str },
    #[error("{url}: TLS failed: {detail}{hint}")]
    Tls {
        url: String,
        detail: String,
        hint: &'static str,
    },
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The daemon refused the query; `param` names the parameter it did not accept.
    #[error("{url}: HTTP {code}: {message}")]
    Status {
        url: String,
        code: u16,
        message: String,
        param: Option<String>,
    },
    #[error("{url}: not an HTTP answer (a daemon with TLS? then use an https:// --url)")]
    NotHttp { url: String },
    #[error("{url}: the answer is larger than {} MiB", ANSWER_MAX_BYTES >> 20)]
    TooLarge { url: String },
    #[error("{url}: not a JSON answer (is this the profiler's address?): {detail}")]
    NotJson { url: String, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--url '{0}': only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error(
        "--url: credentials do not go on the command line (ps shows them); use \
         --credentials-file or {ENV_USER} and {ENV_PASSWORD}"
    )]
    CredentialsInUrl,
    #[error("--credentials-file {path}: {cause}")]
    CredentialsFile { path: PathBuf, cause: String },
    #[error("{0} is set without {1}: set both, or neither")]
    HalfCredentials(&'static str, &'static str),
    #[error("--ca-file {path}: {cause}")]
    CaFile { path: PathBuf, cause: String },
    #[error("--ca-file needs an https:// --url")]
    CaWithoutTls,
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// The `Authorization` header, when credentials were given.
    auth: Option<String>,
}

/// `user:password`, from the file if given, else from the environment.
fn credentials(file: Option<&Path>) -> Result<Option<(String, String)>, SetupError> {
    if let Some(path) = file {
        let bad = |cause: String| SetupError::CredentialsFile {
            path: path.to_path_buf(),
            cause,
        };
        let bytes = read_capped(path).map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        let (user, password) = line
            .split_once(':')
            .filter(|(u, _)| !u.is_empty())
            .ok_or_else(|| bad("expected one line user:password".into()))?;
        return Ok(Some((user.to_string(), password.to_string())));
    }
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var(ENV_USER), var(ENV_PASSWORD)) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(SetupError::HalfCredentials(ENV_USER, ENV_PASSWORD)),
        (None, Some(_)) => Err(SetupError::HalfCredentials(ENV_PASSWORD, ENV_USER)),
    }
}

/// Only the CA in `path` is trusted: a private CA's daemon, not the web's.
fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |cause: String| SetupError::CaFile {
        path: path.to_path_buf(),
        cause,
    };
    let pem = read_capped(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Client {
    pub fn new(
        url: &str,
        credentials_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Client, SetupError> {
        let base = url.trim_end_matches('/').to_string();
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err(SetupError::Scheme(url.into()));
        };
        if scheme != "http" && scheme != "https" {
            return Err(SetupError::Scheme(url.into()));
        }
        if rest.split('/').next().unwrap_or("").contains('@') {
            return Err(SetupError::CredentialsInUrl);
        }
        let mut agent = ureq::AgentBuilder::new().timeout(TIMEOUT);
        if let Some(ca) = ca_file {
            if scheme != "https" {
                return Err(SetupError::CaWithoutTls);
            }
            agent = agent.tls_config(tls_config(ca)?);
        }
        let auth = credentials(credentials_file)?.map(|(user, password)| {
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {b64}")
        });
        Ok(Client {
            base,
            agent: agent.build(),
            auth,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path_and_query` and parse the JSON answer.
    pub fn get(&self, path_and_query: &str) -> Result<Value, FetchError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut request = self.agent.get(&url);
        // Errors name the endpoint, not the whole query: one short line.
        let url = url.split('?').next().unwrap_or_default().to_string();
        if let Some(auth) = &self.auth {
            request = request.set("Authorization", auth);
        }
        match request.call() {
            Ok(r) => read_json(&url, r),
            Err(ureq::Error::Status(401, _)) => Err(FetchError::Unauthorized {
                why: if self.auth.is_some() {
                    "wrong user or password"
                } else {
                    "the daemon wants credentials: --credentials-file FILE (one line \
                     user:password) or SYSCALL_PROFILER_USER and SYSCALL_PROFILER_PASSWORD"
                },
                url,
            }),
            Err(ureq::Error::Status(code, r)) => {
                let body = read_json(&url, r).unwrap_or(Value::Null);
                Err(FetchError::Status {
                    code,
                    message: body["error"].as_str().unwrap_or("error").to_string(),
                    param: body["param"].as_str().map(str::to_string),
                    url,
                })
            }
            Err(ureq::Error::Transport(t)) => Err(transport(url, &t)),
        }
    }
}

fn read_json(url: &str, r: ureq::Response) -> Result<Value, FetchError> {
    let mut bytes = Vec::new();
    r.into_reader()
        .take(ANSWER_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FetchError::Unreachable {
            url: url.to_string(),
            detail: format!("reading the answer: {e}"),
        })?;
    if bytes.len() as u64 > ANSWER_MAX_BYTES {
        return Err(FetchError::TooLarge { url: url.into() });
    }
    serde_json::from_slice(&bytes).map_err(|e| FetchError::NotJson {
        url: url.into(),
        detail: e.to_string(),
    })
}

/// A transport failure as one line: TLS (with rustls's reason), or unreachable (with the
/// system's).
fn transport(url: String, t: &ureq::Transport) -> FetchError {
    // The innermost cause is the one that says why (rustls's or the socket's).
    let mut detail = t.message().unwrap_or("").to_string();
    let mut tls = detail.starts_with("tls ");
    let mut cause = t.source();
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        detail = c.to_string();
        cause = c.source();
    }
    if tls {
        let hint = if detail.contains("UnknownIssuer") || detail.contains("certificate") {
            " (a private CA: --ca-file FILE)"
        } else if detail.contains("InvalidContentType") || detail.contains("corrupt message") {
            " (does the daemon serve plain http? then use an http:// --url)"
        } else {
            ""
        };
        return FetchError::Tls { url, detail, hint };
    }
    // What a TLS listener sends a plain request (an alert) is no status line; ureq reports
    // a status line without its end as an I/O error, hence the text.
    if matches!(
        t.kind(),
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader
    ) || detail.contains("didn't end with")
    {
        return FetchError::NotHttp { url };
    }
    if detail.is_empty() {
        detail = t.kind().to_string();
    }
    FetchError::Unreachable { url, detail }
}
