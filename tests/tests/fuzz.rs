//! Malformed and odd requests over real TCP against the real daemon: the checked-in corpus
//! (tests/fuzz/*.http, raw bytes as sent) and a seeded generator of many more. No answer is a
//! 5xx, every 4xx has a JSON body whose `error` says what was wrong, nothing hangs, and the daemon
//! is alive and well afterwards. FUZZ_SEED and FUZZ_CASES change the generated part.

use std::{
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use tests::{
    raw_http::{addr_of, exchange, expects_answer, RawResponse},
    Daemon,
};

/// Long enough for any answer on a loaded machine; a request that takes longer hung.
const HANG: Duration = Duration::from_secs(15);

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "the corpus in {} is missing",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// xorshift64*: the same cases for the same seed, on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
    "TRACE", "get", "BREW", "G\tET", "",
];
const PATHS: &[&str] = &[
    "/stats",
    "/stats",
    "/metrics",
    "/healthz",
    "/",
    "/history",
    "/insights",
    "/assets/app.js",
    "/assets/style.css",
    "/nope",
    "/stats/",
    "//metrics",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/stats%00",
    "*",
    "http://127.0.0.1/healthz",
    "/\u{e4}",
];
const KEYS: &[&str] = &[
    "pid", "comm", "syscall", "top", "sort", "limit", "offset", "after", "buckets", "fields",
    "window", "x", "", "%00", "top[]", "p%69d", "syscalls", "exited",
];
const VALUES: &[&str] = &[
    "1",
    "0",
    "-1",
    "+5",
    "007",
    "4294967296",
    "18446744073709551616",
    "99999999",
    "read",
    "openat",
    "syscall_1",
    "total",
    "p99",
    "errors",
    "count",
    "cpu",
    "blocked",
    "all",
    "true",
    "",
    "%ZZ",
    "%FF%FE",
    "a+b",
    "%E2%9C%93",
    "1e3",
    " 1",
    "0x10",
];
const HEADERS: &[&str] = &[
    "Accept-Encoding: gzip",
    "Authorization: Basic Zm9vOmJhcg==",
    "Authorization: Bearer x",
    "Connection: close",
    "Connection: keep-alive",
    "Cookie: a=b",
    "Range: bytes=0-10",
    "If-None-Match: *",
    "X-Forwarded-For: 1.2.3.4",
    "Accept: application/json",
    "Content-Type: text/plain",
    "Host: ",
    "Host: a, b",
    "X-\u{7f}: y",
];

fn query(rng: &mut Rng) -> String {
    let mut q = String::new();
    for i in 0..rng.below(5) {
        if i > 0 {
            q.push_str(rng.pick(&["&", "&", ";", "&&"]));
        }
        q.push_str(rng.pick(KEYS));
        if rng.below(8) > 0 {
            q.push('=');
            q.push_str(rng.pick(VALUES));
        }
    }
    q
}

/// A request whose head is complete: method, path, query and headers from the lists above.
fn well_formed(rng: &mut Rng) -> Vec<u8> {
    let mut line = format!("{} {}", rng.pick(METHODS), rng.pick(PATHS));
    if rng.below(3) > 0 {
        line = format!("{line}?{}", query(rng));
    }
    let version = rng.pick(&[
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1",
    ]);
    let mut head = format!("{line} {version}\r\n");
    if rng.below(10) > 0 {
        head.push_str("Host: x\r\n");
    }
    for _ in 0..rng.below(3) {
        head.push_str(rng.pick(HEADERS));
        head.push_str("\r\n");
    }
    let body: &[u8] = match rng.below(8) {
        0 => {
            head.push_str("Content-Length: 5\r\n");
            b"hello"
        }
        1 => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            b"3\r\nabc\r\n0\r\n\r\n"
        }
        _ => b"",
    };
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A corpus entry with a few bytes flipped, cut, repeated or inserted.
fn mutated(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(4) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                let end = (at + rng.below(16)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => {
                b.remove(at);
            }
        }
    }
    b
}

fn generated(seed: u64, n: usize, corpus: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            let bytes = match rng.below(10) {
                0..=5 => well_formed(&mut rng),
                6..=8 => {
                    let base = rng.below(corpus.len());
                    mutated(&mut rng, &corpus[base].1)
                }
                _ => {
                    let mut b: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                    b.extend_from_slice(b"\r\n\r\n");
                    b
                }
            };
            (format!("generated #{i} (seed {seed})"), bytes)
        })
        .collect()
}

/// What is wrong with the daemon's reaction to `request`, if anything.
fn judge(request: &[u8], answer: std::io::Result<Option<RawResponse>>) -> Option<String> {
    let r = match answer {
        Err(e) => return Some(format!("no answer and no close: {e}")),
        Ok(None) if expects_answer(request) => return Some("closed without an answer".into()),
        Ok(None) => return None,
        Ok(Some(r)) => r,
    };
    if r.status >= 500 {
        return Some(format!("answered {}", r.head));
    }
    if r.status < 400 || request.starts_with(b"HEAD ") {
        return None;
    }
    let is_json = r
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    let error = r
        .json()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    match error {
        Some(e) if is_json && !e.trim().is_empty() => None,
        _ => Some(format!(
            "{} without a JSON error: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn corpus_and_generated_requests_get_4xx_with_json_never_5xx_nor_a_hang() {
    let mut daemon = Daemon::start(&["--interval", "200ms"]);
    let addr = addr_of(&daemon.base).to_string();
    let corpus = corpus();
    let seed = env_or("FUZZ_SEED", 0x005e_ed11);
    let cases = env_or("FUZZ_CASES", 1500) as usize;
    let mut all = corpus.clone();
    all.extend(generated(seed, cases, &corpus));

    let t0 = Instant::now();
    let failures = Mutex::new(Vec::new());
    let statuses = Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, bytes)) = all.get(i) else {
                    return;
                };
                let answer = exchange(&addr, bytes, HANG);
                if let Ok(Some(r)) = &answer {
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                }
                if let Some(why) = judge(bytes, answer) {
                    failures.lock().unwrap().push(format!(
                        "{name}: {why}\n    sent {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    ));
                }
            });
        }
    });
    eprintln!(
        "{} requests in {:.1} s; answers by status: {:?}",
        all.len(),
        t0.elapsed().as_secs_f64(),
        statuses.lock().unwrap()
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests were mishandled:\n{}",
        failures.len(),
        all.len(),
        failures[..failures.len().min(15)].join("\n")
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        daemon.stderr()
    );
    let (status, body) = daemon.get("/healthz");
    assert_eq!((status, body.as_str()), (200, Some("ok\n")));
    assert!(!daemon.stderr().contains("panicked"), "{}", daemon.stderr());
}

/// The answer to `request`, which must come.
fn answer(addr: &str, request: &[u8]) -> RawResponse {
    exchange(addr, request, HANG)
        .expect("an answer in time")
        .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)))
}

/// Asserts `r` is `status` with a JSON `error` containing each of `words`.
fn json_error(r: &RawResponse, status: u16, words: &[&str]) {
    assert_eq!(
        r.status,
        status,
        "{} {:?}",
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{}",
        r.head
    );
    let body = r.json().unwrap_or_else(|| panic!("not JSON: {:?}", r.body));
    let error = body["error"].as_str().unwrap_or_default();
    for w in words {
        assert!(error.contains(w), "'{w}' missing from the error: {body}");
    }
}

#[test]
fn routing_and_parse_errors_answer_the_json_error_naming_the_problem() {
    let daemon = Daemon::start(&[]);
    let addr = addr_of(&daemon.base);
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();

    json_error(&answer(addr, &get("/nope")), 404, &["/nope"]);
    let r = answer(
        addr,
        b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    json_error(&r, 405, &["POST", "/stats"]);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{}",
        r.head
    );
    let big_body = [
        &b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"[..],
        &[b'z'; 4096],
    ]
    .concat();
    json_error(&answer(addr, &big_body), 413, &["body"]);
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    json_error(&answer(addr, big_head.as_bytes()), 431, &["16 KiB"]);
    // Before any routing: hyper refuses these itself; the daemon gives its answer a body.
    json_error(&answer(addr, b"hello there\r\n\r\n"), 400, &["malformed"]);
    json_error(
        &answer(addr, b"GET /healthz HTTP/1.1\r\nBad Name: y\r\n\r\n"),
        400,
        &["malformed"],
    );
    // A bad query parameter, for comparison: the views' own 400.
    json_error(&answer(addr, &get("/stats?top=x")), 400, &["top"]);
    assert_eq!(answer(addr, &get("/healthz")).body, b"ok\n");
}
