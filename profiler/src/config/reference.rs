//! The settings as the docs and the packaged config file state them, checked against the
//! declaration: a row added to table.rs fails these tests until docs/configuration.md and
//! packaging/config.toml say it (the failure prints the docs table to paste).

use std::path::{Path, PathBuf};

use super::{
    args::ServeArgs,
    declare::{env_name, flag_name, Apply, Decl, Initial, OTHER_VARIABLES},
    sources::{load, Env},
    table::DECLARED,
    Settings,
};

/// Where docs/configuration.md's settings table starts; it ends at the first blank line.
const TABLE_MARK: &str = "<!-- the settings table: made from profiler/src/config/table.rs";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A row of the docs table.
fn docs_row(d: &Decl) -> String {
    let default = match d.initial {
        Initial::Value(text) => format!("`{text}`"),
        Initial::Unset(text) => text.to_string(),
    };
    let see = d.see.map_or(String::new(), |link| format!(" See {link}."));
    let sighup = match d.apply {
        Apply::Reload => "applied",
        Apply::Restart => "restart",
    };
    format!(
        "| `{}` | `{}` | {default} | {}{see} | {sighup} |",
        d.key,
        flag_name(d.key),
        d.help()
    )
}

/// The settings table docs/configuration.md must hold, header included.
fn docs_table() -> String {
    let mut lines = vec![
        "| key | flag | default | meaning | SIGHUP |".to_string(),
        "| --- | --- | --- | --- | --- |".to_string(),
    ];
    lines.extend(DECLARED.iter().map(docs_row));
    lines.join("\n")
}

#[test]
fn the_docs_table_is_the_declaration() {
    let docs = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let start = docs
        .find(TABLE_MARK)
        .unwrap_or_else(|| panic!("docs/configuration.md has no line starting {TABLE_MARK}"));
    let after_mark = &docs[start..];
    let table_start = after_mark.find('\n').unwrap() + 1;
    let table = after_mark[table_start..]
        .split("\n\n")
        .next()
        .unwrap()
        .trim_end();
    let expected = docs_table();
    assert!(
        table == expected,
        "docs/configuration.md's settings table differs from profiler/src/config/table.rs; \
         replace it with:\n\n{expected}\n"
    );
}

#[test]
fn the_docs_name_every_other_variable() {
    let docs = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    for (name, _) in OTHER_VARIABLES {
        assert!(
            docs.contains(name),
            "docs/configuration.md does not name {name}"
        );
    }
}

#[test]
fn the_packaged_config_file_lists_every_key_with_its_default() {
    let path = repo_file("packaging/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    for d in DECLARED {
        let set = format!("{} = ", d.key);
        let commented = format!("# {} = ", d.key);
        let listed = match d.initial {
            // Set to its default (the load below checks the value).
            Initial::Value(_) => text.lines().any(|l| l.starts_with(&set)),
            // An example, commented out: unset is the default.
            Initial::Unset(_) => text.lines().any(|l| l.starts_with(&commented)),
        };
        assert!(listed, "packaging/config.toml does not list {}", d.key);
    }
    let s = load(
        &ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        },
        &Env::default(),
    )
    .unwrap();
    assert_eq!(
        s,
        Settings {
            config_file: Some(path),
            ..Settings::default()
        }
    );
}

#[test]
fn every_row_is_well_formed() {
    let defaults = Settings::default(); // panics if a default is refused by its own parser
    assert!(defaults.listen.ip().is_loopback());
    for (i, d) in DECLARED.iter().enumerate() {
        assert!(
            d.help().ends_with('.') && !d.help().contains('|'),
            "{}: help must be one sentence-ended paragraph without '|'",
            d.key
        );
        assert!(
            d.key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{}",
            d.key
        );
        assert!(
            DECLARED[..i].iter().all(|e| e.key != d.key),
            "{} declared twice",
            d.key
        );
        assert!(
            OTHER_VARIABLES
                .iter()
                .all(|(name, _)| *name != env_name(d.key)),
            "{}'s variable is also declared as another variable",
            d.key
        );
    }
}
