//! `cargo xtask layers`: the daemon's source folders are layers (docs/design.md, "Module
//! layers"). Data flows one way — kernel maps → drain → store → views → http → cmd — and the
//! folders show it: a file may import only from its own layer or from the lower layers its layer
//! lists, and no chain of imports between files may come back to where it started.
//!
//! Imports are read from the source text: `use crate::…`/`super::…`/`self::…` trees (nested
//! braces included) and inline paths starting with `crate::`, `super::`, `self::` or a child
//! module the file declares. Comments, strings and character literals are skipped. A path is
//! charged to the file of the deepest module it names, so `crate::store::Store` is an import of
//! `store/mod.rs` and `crate::store::keys::ProcKey` one of `store/keys.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// One folder of `profiler/src` and what it may import.
pub struct Layer {
    pub folder: &'static str,
    pub rank: u8,
    /// Lower layers only; a file may always import files of its own layer.
    pub may_import: &'static [&'static str],
}

/// The layer table, bottom first (docs/design.md quotes it).
pub const LAYERS: &[Layer] = &[
    Layer {
        folder: "syscalls",
        rank: 0,
        may_import: &[],
    },
    Layer {
        folder: "host",
        rank: 0,
        may_import: &[],
    },
    Layer {
        folder: "config",
        rank: 1,
        may_import: &["syscalls"],
    },
    Layer {
        folder: "kernel",
        rank: 2,
        may_import: &["syscalls", "host", "config"],
    },
    Layer {
        folder: "store",
        rank: 2,
        may_import: &["syscalls", "host"],
    },
    Layer {
        folder: "drain",
        rank: 3,
        may_import: &["kernel", "store", "syscalls", "host", "config"],
    },
    Layer {
        folder: "views",
        rank: 3,
        may_import: &["store", "syscalls", "host", "config"],
    },
    Layer {
        folder: "http",
        rank: 4,
        may_import: &["views", "config", "store", "host"],
    },
    Layer {
        folder: "cmd",
        rank: 5,
        may_import: &[
            "syscalls", "host", "config", "kernel", "store", "drain", "views", "http",
        ],
    },
    // The crate root: declares the layers and hands over to `cmd`.
    Layer {
        folder: "main.rs",
        rank: 6,
        may_import: &["cmd"],
    },
];

/// Where the daemon's sources are, relative to the workspace root.
pub const SOURCES: &str = "profiler/src";

/// Checks the daemon's sources; prints the layer graph on success.
pub fn run(root: &Path) -> Result<()> {
    let src = root.join(SOURCES);
    let graph = Graph::read(&src)?;
    let violations = graph.violations();
    if !violations.is_empty() {
        for v in &violations {
            println!("{SOURCES}/{v}");
        }
        bail!(
            "{} layer violation{} (the layers: docs/design.md, \"Module layers\")",
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        );
    }
    print!("{}", graph.summary());
    Ok(())
}

/// One import: `from` (a file, relative to the sources) uses `path` at `line`, which is in `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub from: String,
    pub line: usize,
    pub path: String,
    pub to: String,
}

pub struct Graph {
    pub files: BTreeSet<String>,
    pub imports: Vec<Import>,
}

impl Graph {
    /// Every `.rs` file under `src` and the imports between them.
    pub fn read(src: &Path) -> Result<Graph> {
        let mut paths = Vec::new();
        collect_rs(src, &mut paths)?;
        let mut texts = BTreeMap::new();
        for path in paths {
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let rel = rel.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            texts.insert(rel, text);
        }
        Ok(Graph::of(&texts))
    }

    /// The graph of in-memory sources: file (relative path) → text.
    pub fn of(texts: &BTreeMap<String, String>) -> Graph {
        let modules: BTreeMap<Vec<String>, String> = texts
            .keys()
            .map(|file| (module_of(file), file.clone()))
            .collect();
        let mut imports = Vec::new();
        for (file, text) in texts {
            let module = module_of(file);
            let scan = scan(text);
            for r in scan.refs {
                let mut here = module.clone();
                here.extend(r.scope.iter().cloned());
                let bare_child = r.scope.is_empty() && scan.children.contains(&r.path[0]);
                let Some(target) = absolute(&here, &r.path, bare_child) else {
                    continue;
                };
                let to = file_of(&modules, &target);
                if to != *file {
                    imports.push(Import {
                        from: file.clone(),
                        line: r.line,
                        path: r.path.join("::"),
                        to,
                    });
                }
            }
        }
        Graph {
            files: texts.keys().cloned().collect(),
            imports,
        }
    }

    /// One line per file outside the layer folders, per import its layer may not make, and per
    /// cycle between files.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for file in &self.files {
            if layer(file).is_none() {
                out.push(format!(
                    "{file}:1: not in a layer folder (the layers: {})",
                    LAYERS
                        .iter()
                        .map(|l| l.folder)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        for i in &self.imports {
            if let (Some(from), Some(to)) = (layer(&i.from), layer(&i.to)) {
                if let Some(why) = forbidden(from, to) {
                    out.push(format!(
                        "{}:{}: {} ({}): {why}",
                        i.from, i.line, i.path, i.to
                    ));
                }
            }
        }
        for cycle in self.cycles() {
            let (from, first) = (&cycle[0], &cycle[1]);
            let line = self
                .imports
                .iter()
                .find(|i| i.from == *from && i.to == *first)
                .map_or(1, |i| i.line);
            out.push(format!(
                "{from}:{line}: import cycle: {}",
                cycle.join(" → ")
            ));
        }
        out
    }

    /// Each cycle of the file graph, once per strongly connected component: a closed path
    /// (first file repeated at the end) from the component's first file in name order.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for i in &self.imports {
            next.entry(i.from.as_str())
                .or_default()
                .insert(i.to.as_str());
        }
        let mut out = Vec::new();
        for component in components(&self.files, &next) {
            if component.len() < 2 {
                continue;
            }
            let start = component.iter().next().expect("a component has a file");
            out.push(closed_path(start, &component, &next));
        }
        out
    }

    /// Which layers import which, with the number of file-to-file imports, top layer first.
    pub fn summary(&self) -> String {
        let mut edges: BTreeMap<(&str, &str), BTreeSet<(&str, &str)>> = BTreeMap::new();
        for i in &self.imports {
            if let (Some(from), Some(to)) = (layer(&i.from), layer(&i.to)) {
                edges
                    .entry((from.folder, to.folder))
                    .or_default()
                    .insert((i.from.as_str(), i.to.as_str()));
            }
        }
        let mut out = String::new();
        let files = self.files.len();
        let _ = writeln!(
            out,
            "{SOURCES}: {files} files in {} layers. Each layer, top first: the lower layers it \
             imports (how many file → file imports), and the imports between its own files.",
            LAYERS.len()
        );
        for l in LAYERS.iter().rev() {
            let lower: Vec<String> = LAYERS
                .iter()
                .filter(|to| to.folder != l.folder)
                .filter_map(|to| {
                    Some(format!(
                        "{} {}",
                        to.folder,
                        edges.get(&(l.folder, to.folder))?.len()
                    ))
                })
                .collect();
            let own = edges.get(&(l.folder, l.folder)).map_or(0, BTreeSet::len);
            let lower = if lower.is_empty() {
                "nothing".to_string()
            } else {
                lower.join(", ")
            };
            let _ = writeln!(out, "  {} {:<9} → {lower}; within: {own}", l.rank, l.folder);
        }
        let _ = writeln!(out, "no upward import, no import cycle");
        out
    }
}

/// The layer a file (relative to the sources) belongs to: its top folder, or `main.rs` itself.
fn layer(file: &str) -> Option<&'static Layer> {
    let top = file.split_once('/').map_or(file, |(dir, _)| dir);
    LAYERS.iter().find(|l| l.folder == top)
}

/// Why layer `from` may not import layer `to`, if it may not.
fn forbidden(from: &Layer, to: &Layer) -> Option<String> {
    if from.folder == to.folder || from.may_import.contains(&to.folder) {
        return None;
    }
    Some(if to.rank > from.rank {
        format!(
            "upward import: {} (rank {}) may not import {} (rank {})",
            from.folder, from.rank, to.folder, to.rank
        )
    } else if to.rank == from.rank {
        format!(
            "{} and {} are both rank {}: neither may import the other",
            from.folder, to.folder, from.rank
        )
    } else {
        format!(
            "{} may import only {}",
            from.folder,
            if from.may_import.is_empty() {
                "itself".to_string()
            } else {
                from.may_import.join(", ")
            }
        )
    })
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `main.rs` → the crate root, `a/mod.rs` and `a.rs` → `a`, `a/b.rs` → `a::b`.
fn module_of(file: &str) -> Vec<String> {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts
}

/// `path`, used in module `here`, as a path from the crate root; None for other crates.
fn absolute(here: &[String], path: &[String], bare_child: bool) -> Option<Vec<String>> {
    let (base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (here.to_vec(), &path[1..]),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let keep = here.len().checked_sub(supers)?;
            (here[..keep].to_vec(), &path[supers..])
        }
        _ if bare_child => (here.to_vec(), path),
        _ => return None,
    };
    let mut abs = base;
    abs.extend(rest.iter().cloned());
    Some(abs)
}

/// The file of the deepest module `path` names.
fn file_of(modules: &BTreeMap<Vec<String>, String>, path: &[String]) -> String {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]))
        .cloned()
        .unwrap_or_else(|| "main.rs".to_string())
}

/// Tarjan's strongly connected components, each as a set of files.
fn components<'a>(
    files: &'a BTreeSet<String>,
    next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Vec<BTreeSet<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<&'a str>>,
    }
    fn visit<'a>(v: &'a str, next: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in next.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, next, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for f in files {
        if !s.index.contains_key(f.as_str()) {
            visit(f, next, &mut s);
        }
    }
    s.out.sort();
    s.out
}

/// A shortest path from `start` back to itself inside `component` (breadth first).
fn closed_path(
    start: &str,
    component: &BTreeSet<&str>,
    next: &BTreeMap<&str, BTreeSet<&str>>,
) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in next.get(v).into_iter().flatten() {
            if !component.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(start.to_string());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("every file of a strongly connected component is on a cycle")
}

/// A path as written in a file, in the inline module `scope` (e.g. `tests`) of the file.
#[derive(Debug, PartialEq, Eq)]
struct Ref {
    scope: Vec<String>,
    path: Vec<String>,
    line: usize,
}

struct Scan {
    refs: Vec<Ref>,
    /// Modules the file declares with `mod name;`.
    children: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other(char),
}

/// The paths a file's text uses that may name one of the crate's modules.
fn scan(text: &str) -> Scan {
    let toks = tokens(&blank_comments_and_literals(text));
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: Tok| toks.get(i).is_some_and(|(x, _)| *x == t);
    let mut children = BTreeSet::new();
    for i in 0..toks.len() {
        if let (Some("mod"), Some(name)) = (ident(i), ident(i + 1)) {
            if is(i + 2, Tok::Semi) {
                children.insert(name.to_string());
            }
        }
    }
    let mut refs = Vec::new();
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let in_scope = || scope.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>();
        match (&toks[i].0, ident(i + 1)) {
            (Tok::Ident(m), Some(name)) if m == "mod" && is(i + 2, Tok::Open) => {
                scope.push((name.to_string(), depth));
                i += 2;
                continue;
            }
            (Tok::Ident(u), _) if u == "use" => {
                let mut paths = Vec::new();
                i = use_tree(&toks, i + 1, Vec::new(), &mut paths);
                for (path, line) in paths {
                    refs.push(Ref {
                        scope: in_scope(),
                        path,
                        line,
                    });
                }
                continue;
            }
            (Tok::Open, _) => depth += 1,
            (Tok::Close, _) => {
                depth -= 1;
                if scope.last().is_some_and(|&(_, d)| d == depth) {
                    scope.pop();
                }
            }
            (Tok::Ident(first), _) => {
                let starts_path = i == 0
                    || !matches!(
                        toks[i - 1].0,
                        Tok::PathSep | Tok::Other('$') | Tok::Other('.')
                    );
                let rooted = matches!(first.as_str(), "crate" | "super" | "self")
                    || (scope.is_empty() && children.contains(first));
                if starts_path && rooted && is(i + 1, Tok::PathSep) && ident(i + 2).is_some() {
                    let mut path = vec![first.clone()];
                    let mut j = i + 1;
                    while is(j, Tok::PathSep) {
                        let Some(seg) = ident(j + 1) else { break };
                        path.push(seg.to_string());
                        j += 2;
                    }
                    refs.push(Ref {
                        scope: in_scope(),
                        path,
                        line: toks[i].1,
                    });
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scan { refs, children }
}

/// Reads one use tree from `toks[i]` under `prefix`; returns the index after it (after the
/// closing `;` at the top level).
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let top = prefix.is_empty();
    let mut path = prefix;
    let line = toks.get(i).map_or(0, |t| t.1);
    if toks.get(i).is_some_and(|t| t.0 == Tok::PathSep) {
        // `::name`: another crate.
        path.push(String::new());
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                i += 1;
            }
            Some(Tok::Open) => {
                i += 1;
                while toks.get(i).is_some_and(|t| t.0 != Tok::Close) {
                    i = use_tree(toks, i, path.clone(), out);
                    if toks.get(i).is_some_and(|t| t.0 == Tok::Comma) {
                        i += 1;
                    }
                }
                i += 1;
                return finish(toks, i, top);
            }
            Some(Tok::Star) => {
                i += 1;
                break;
            }
            _ => break,
        }
        if toks.get(i).is_some_and(|t| t.0 == Tok::PathSep) {
            i += 1;
        } else {
            break;
        }
    }
    if let Some((Tok::Ident(s), _)) = toks.get(i) {
        if s == "as" {
            i += 2;
        }
    }
    if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    if path.first().is_some_and(|s| !s.is_empty()) {
        out.push((path, line));
    }
    finish(toks, i, top)
}

/// Past the `;` that ends a top-level use tree.
fn finish(toks: &[(Tok, usize)], i: usize, top: bool) -> usize {
    if top && toks.get(i).is_some_and(|t| t.0 == Tok::Semi) {
        i + 1
    } else {
        i
    }
}

/// Identifiers and the punctuation paths and use trees are made of, with their line numbers.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 2;
                out.push((Tok::PathSep, line));
                continue;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                // `r#name` is the identifier `name`.
                if i - start == 1 && c == 'r' && chars.get(i) == Some(&'#') {
                    i += 1;
                    continue;
                }
                let word: String = chars[start..i].iter().collect();
                out.push((Tok::Ident(word), line));
                continue;
            }
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            '*' => Tok::Star,
            c => Tok::Other(c),
        };
        out.push((tok, line));
        i += 1;
    }
    out
}

/// `text` with comments and the contents of string and character literals replaced by spaces;
/// newlines are kept, so line numbers still hold.
fn blank_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[char]| {
        for &ch in s {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let starts_word = i == 0 || !ident_char(c[i - 1]);
        let end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len())
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            block_comment_end(&c, i)
        } else if let Some(end) = starts_word.then(|| raw_string_end(&c, i)).flatten() {
            end
        } else if c[i] == '"' {
            string_end(&c, i)
        } else if c[i] == '\'' {
            match char_literal_end(&c, i) {
                Some(end) => end,
                None => {
                    out.push('\'');
                    i += 1;
                    continue;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &c[i..end]);
        i = end;
    }
    out
}

/// The end (exclusive) of the block comment at `i`; they nest.
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// The end (exclusive) of the `"…"` string at `i`, escapes included.
fn string_end(c: &[char], mut i: usize) -> usize {
    i += 1;
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// The end (exclusive) of a raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `i`, if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&ch| ch == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// The end (exclusive) of the character literal at `i`; None for a lifetime or label (`'a`).
fn char_literal_end(c: &[char], i: usize) -> Option<usize> {
    match c.get(i + 1) {
        Some('\\') => {
            let close = (i + 2..c.len()).find(|&j| c[j] == '\'')?;
            Some(close + 1)
        }
        Some(_) if c.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<(Vec<String>, String, usize)> {
        scan(text)
            .refs
            .into_iter()
            .map(|r| (r.scope, r.path.join("::"), r.line))
            .collect()
    }

    fn graph(files: &[(&str, &str)]) -> Graph {
        let texts = files
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        Graph::of(&texts)
    }

    #[test]
    fn nested_use_trees_give_every_path() {
        let got = paths(
            "use crate::{\n    store::{self, keys::{ProcKey, SyscallKey as Sk}},\n    views::*,\n};\n\
             use std::io;\nuse super::{a, b::c};\n",
        );
        let names: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "crate::store",
                "crate::store::keys::ProcKey",
                "crate::store::keys::SyscallKey",
                "crate::views",
                "std::io",
                "super::a",
                "super::b::c"
            ]
        );
        assert_eq!(got[0].2, 2, "the line the tree starts on");
    }

    #[test]
    fn inline_paths_and_test_modules() {
        let text = "mod keys;\nfn f() { let x = crate::store::Store::new(); keys::ProcKey::MAX; \
                    y.keys::<u8>(); }\n#[cfg(test)]\nmod tests {\n    use super::*;\n    \
                    fn g() { keys::x(); super::super::h(); }\n}\nfn after() { self::keys::k(); }\n";
        let got = paths(text);
        assert_eq!(
            got,
            vec![
                (vec![], "crate::store::Store::new".to_string(), 2),
                (vec![], "keys::ProcKey::MAX".to_string(), 2),
                (vec!["tests".to_string()], "super".to_string(), 5),
                (vec!["tests".to_string()], "super::super::h".to_string(), 6),
                (vec![], "self::keys::k".to_string(), 8),
            ],
            "a child module's name is a path only outside the inline module"
        );
    }

    #[test]
    fn comments_strings_and_chars_are_not_code() {
        let text = "// use crate::a;\n/* crate::b /* nested crate::c */ crate::d */\n\
                    let s = \"crate::e \\\" crate::f\";\nlet r = r#\"crate::g\"#;\n\
                    let c = '\"'; let l: &'static str = x; crate::h::i();\nlet q = '\\'';\n\
                    let bs = br\"crate::j\"; fn k<'a>(x: &'a u8) { crate::l::m() }\n";
        let got = paths(text);
        let names: Vec<(&str, usize)> = got.iter().map(|(_, p, l)| (p.as_str(), *l)).collect();
        assert_eq!(names, [("crate::h::i", 5), ("crate::l::m", 7)]);
    }

    #[test]
    fn super_resolves_from_the_file_and_its_inline_modules() {
        let g = graph(&[
            ("main.rs", "mod store;\nfn main() { store::run() }"),
            (
                "store/mod.rs",
                "mod keys;\nmod totals;\npub use keys::ProcKey;\n",
            ),
            ("store/keys.rs", "pub struct ProcKey;\n"),
            (
                "store/totals.rs",
                "use super::keys::ProcKey;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    \
                 use super::super::Store;\n}\n",
            ),
        ]);
        let edges: Vec<(&str, &str, usize)> = g
            .imports
            .iter()
            .map(|i| (i.from.as_str(), i.to.as_str(), i.line))
            .collect();
        assert_eq!(
            edges,
            [
                ("main.rs", "store/mod.rs", 2),
                ("store/mod.rs", "store/keys.rs", 3),
                ("store/totals.rs", "store/keys.rs", 1),
                ("store/totals.rs", "store/mod.rs", 5),
            ]
        );
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn cycles_are_found_and_printed_closed() {
        let g = graph(&[
            ("store/mod.rs", "use crate::store::aggregates::A;\n"),
            ("store/aggregates.rs", "use crate::store::history::H;\n"),
            ("store/history.rs", "fn f() { crate::store::Store::x() }\n"),
            ("store/keys.rs", "use crate::store::history::H;\n"),
        ]);
        assert_eq!(
            g.cycles(),
            vec![vec![
                "store/aggregates.rs",
                "store/history.rs",
                "store/mod.rs",
                "store/aggregates.rs"
            ]]
        );
        let v = g.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("store/aggregates.rs:1: import cycle: "),
            "{v:?}"
        );
    }

    #[test]
    fn imports_against_the_layers_are_named() {
        let g = graph(&[
            ("main.rs", "mod cmd;\nfn main() { cmd::main() }\n"),
            ("cmd/mod.rs", "use crate::{kernel::Maps, views::stats};\n"),
            (
                "kernel/mod.rs",
                "use crate::config::Filter;\nuse crate::store::Store;\n",
            ),
            (
                "config/mod.rs",
                "pub struct Filter;\nfn f() { crate::views::stats::x() }\n",
            ),
            ("store/mod.rs", "pub struct Store;\n"),
            ("views/stats.rs", "use crate::kernel::Maps;\n"),
            ("stray.rs", "\n"),
        ]);
        let v = g.violations();
        assert_eq!(
            v,
            [
                "stray.rs:1: not in a layer folder (the layers: syscalls, host, config, kernel, \
                 store, drain, views, http, cmd, main.rs)",
                "config/mod.rs:2: crate::views::stats::x (views/stats.rs): upward import: config (rank 1) \
                 may not import views (rank 3)",
                "kernel/mod.rs:2: crate::store::Store (store/mod.rs): kernel and store are both \
                 rank 2: neither may import the other",
                "views/stats.rs:1: crate::kernel::Maps (kernel/mod.rs): views may import only \
                 store, syscalls, host, config",
                "config/mod.rs:2: import cycle: config/mod.rs → views/stats.rs → kernel/mod.rs → \
                 config/mod.rs",
            ]
        );
    }

    #[test]
    fn the_summary_counts_file_imports_per_layer() {
        let g = graph(&[
            ("main.rs", "mod cmd;\nfn main() { cmd::main() }\n"),
            (
                "cmd/mod.rs",
                "use crate::store::{Store, keys::K};\nmod a;\n",
            ),
            ("cmd/a.rs", "use super::x;\n"),
            ("store/mod.rs", "pub use self::keys::K;\n"),
            ("store/keys.rs", "\n"),
        ]);
        assert!(g.violations().is_empty(), "{:?}", g.violations());
        let s = g.summary();
        assert!(s.contains("  5 cmd       → store 2; within: 1\n"), "{s}");
        assert!(s.contains("  2 store     → nothing; within: 1\n"), "{s}");
        assert!(s.contains("  6 main.rs   → cmd 1; within: 0\n"), "{s}");
    }

    #[test]
    fn the_table_lists_lower_layers_only() {
        for l in LAYERS {
            for name in l.may_import {
                let to = LAYERS.iter().find(|t| t.folder == *name).expect(name);
                assert!(to.rank < l.rank, "{} lists {}", l.folder, name);
            }
        }
    }

    /// The daemon's own sources keep their layers: in the README's test command too, not only
    /// in CI's lint step (a test module's import once made a cycle that only CI saw).
    #[test]
    fn the_daemon_keeps_its_layers() {
        // `cargo xtask layers` itself: it prints each violation, then fails.
        run(&crate::workspace_root()).unwrap();
    }
}
