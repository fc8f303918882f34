//! The README and docs/ link to each other by relative paths and `#anchors`; a moved section or a
//! renamed heading must not leave a dead link behind. Needs no kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// README.md and every docs/*.md, relative to the repository root.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path.strip_prefix(root()).unwrap().to_path_buf());
        }
    }
    files.sort();
    files
}

/// Lines outside fenced code blocks, with their line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (backticks, colons, dashes
/// that are not `-`), each space a `-`.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every anchor a file's headings define; a repeated heading gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        let Some(title) = line[hashes..].strip_prefix(' ').filter(|_| hashes > 0) else {
            continue;
        };
        let base = slug(title.trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` and `![alt](target)` outside code spans.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b']' if !in_code && bytes.get(i + 1) == Some(&b'(') => {
                if let Some(len) = line[i + 2..].find(')') {
                    targets.push(line[i + 2..i + 2 + len].to_string());
                    i += 2 + len;
                }
            }
            _ => {}
        }
        i += 1;
    }
    targets
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let files = markdown_files();
    assert!(files.len() > 5, "README.md and docs/*.md: found {files:?}");
    let texts: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(root().join(f)).unwrap()))
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (file, text) in &texts {
        for (line_no, line) in prose_lines(text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    normalize(&file.parent().unwrap().join(path))
                };
                let problem = if !root().join(&dest).exists() {
                    Some("no such file".to_string())
                } else if anchor.is_empty() {
                    None
                } else {
                    match texts.get(&dest) {
                        Some(t) if anchors(t).contains(anchor) => None,
                        Some(_) => Some(format!("no heading with anchor #{anchor}")),
                        None => Some("anchor into a file that is not checked".to_string()),
                    }
                };
                if let Some(why) = problem {
                    broken.push(format!("{}:{line_no}: ({target}): {why}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 30, "only {checked} relative links found");
}

/// `docs/../README.md` → `README.md`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("`/insights` — schema version 1"),
        "insights--schema-version-1"
    );
    assert_eq!(
        slug("For comparison: `strace -c`"),
        "for-comparison-strace--c"
    );
    assert_eq!(
        slug("HTTP: limits, TLS and authentication"),
        "http-limits-tls-and-authentication"
    );
    assert_eq!(
        slug("The profiler's own overhead"),
        "the-profilers-own-overhead"
    );
}
