//! Reads the settings from flags, the environment and a TOML file, in that order of precedence,
//! over the defaults.
//!
//! Every value present in any source is validated, even one a higher source overrides, so a typo
//! in the file is reported now rather than on the day the overriding flag goes away. An unknown
//! key in the file and an unknown `SYSCALL_PROFILER_*` variable are errors alike. Each error
//! names its source and key in one line.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use super::{
    args::ServeArgs,
    declare::{env_name, flag_name, FileKind, Source, ENV_CONFIG, ENV_PREFIX, OTHER_VARIABLES},
    error::{shown, Error, ReadError, FILE_MAX_BYTES},
    parse::{clip, clip_to, Origin},
    table::{Settings, DECLARED},
};

/// The whole of a settings file, refused if it is not a regular file (a FIFO or a device could
/// block or never end) or larger than [`FILE_MAX_BYTES`].
pub fn read_capped(path: &Path) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let mut bytes = Vec::new();
    file.take(FILE_MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_MAX_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// [`read_capped`], as UTF-8 text; `what` names the file in the error.
pub fn read_text(what: &'static str, path: &Path) -> Result<String, Error> {
    let text = read_capped(path)
        .and_then(|bytes| String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8));
    text.map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The TOML file, already checked for syntax and unknown keys.
struct File {
    path: PathBuf,
    table: toml::Table,
}

impl File {
    fn read(path: &Path) -> Result<File, Error> {
        let text = read_text("config file", path)?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| syntax_error("config file", path, &text, &e))?;
        let keys: Vec<&str> = DECLARED.iter().map(|d| d.key).collect();
        if let Some(key) = table.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(Error::UnknownKey {
                path: path.to_path_buf(),
                key: clip(key),
                hint: hint(key, &keys),
            });
        }
        Ok(File {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The value of `key` as text for the shared parsers, if it is of a kind the key takes.
    fn get(&self, key: &str, kind: FileKind) -> Result<Option<String>, Error> {
        use toml::Value as V;
        let text = match (self.table.get(key), kind) {
            (None, _) => return Ok(None),
            // Every parser reads text, so a string is taken for any kind ("64MiB", "true").
            (Some(V::String(s)), _) => s.clone(),
            (Some(V::Integer(n)), FileKind::Whole | FileKind::Real) => n.to_string(),
            (Some(V::Float(x)), FileKind::Real) => x.to_string(),
            (Some(V::Boolean(b)), FileKind::Bool) => b.to_string(),
            (Some(other), _) => {
                return Err(Error::WrongType {
                    path: self.path.clone(),
                    key: key.to_string(),
                    expected: kind.expected(),
                    found: other.type_str(),
                })
            }
        };
        Ok(Some(text))
    }
}

/// A TOML error in one line: its message (clipped) and where it is. `what` is the kind of file.
pub fn syntax_error(what: &'static str, path: &Path, text: &str, e: &toml::de::Error) -> Error {
    Error::Syntax {
        what,
        path: path.to_path_buf(),
        line: e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
        message: clip_to(&e.message().trim().replace('\n', " "), 200),
    }
}

/// The environment's variables that start with [`ENV_PREFIX`]; the rest are not ours.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, Result<String, OsString>>,
}

impl Env {
    /// This process's environment.
    pub fn process() -> Env {
        Env::of(std::env::vars_os().map(|(name, value)| {
            let name = name.to_string_lossy().into_owned();
            (name, value.into_string())
        }))
    }

    pub fn of(vars: impl IntoIterator<Item = (String, Result<String, OsString>)>) -> Env {
        Env {
            vars: vars
                .into_iter()
                .filter(|(name, _)| name.starts_with(ENV_PREFIX))
                .collect(),
        }
    }

    /// The value of `name`; one that is not UTF-8 is an error, not absent.
    fn get(&self, name: &str) -> Result<Option<String>, Error> {
        match self.vars.get(name) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.clone())),
            Some(Err(_)) => Err(Error::Invalid {
                place: format!("environment variable {name}"),
                why: "not valid UTF-8".into(),
            }),
        }
    }

    /// The first variable with our prefix that is neither a setting's nor one of
    /// [`OTHER_VARIABLES`].
    fn check_names(&self) -> Result<(), Error> {
        let settings: Vec<String> = DECLARED.iter().map(|d| d.env()).collect();
        let others: Vec<&str> = OTHER_VARIABLES.iter().map(|(name, _)| *name).collect();
        let known: Vec<&str> = settings
            .iter()
            .map(String::as_str)
            .chain(others.iter().copied())
            .collect();
        let Some(name) = self
            .vars
            .keys()
            .find(|name| !known.contains(&name.as_str()))
        else {
            return Ok(());
        };
        Err(Error::UnknownVariable {
            name: clip(name),
            hint: near_miss(name, &known).unwrap_or_else(|| {
                format!(
                    "(known: {ENV_PREFIX}<KEY> for each key of docs/configuration.md, {})",
                    others.join(", ")
                )
            }),
        })
    }
}

/// "(did you mean 'x'?)" for a near miss, else the list of what is known.
fn hint(word: &str, known: &[&str]) -> String {
    near_miss(word, known).unwrap_or_else(|| format!("(known: {})", known.join(", ")))
}

/// "(did you mean 'x'?)" if `word` is a typo of one of `known`.
fn near_miss(word: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), k))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, k)| format!("(did you mean '{k}'?)"))
}

/// Levenshtein distance, for [`hint`]; words over 64 characters are far from everything.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() > 64 {
        return usize::MAX;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

struct Sources<'a> {
    flags: &'a ServeArgs,
    env: &'a Env,
    file: Option<File>,
}

impl Source for Sources<'_> {
    fn get<T>(
        &self,
        key: &'static str,
        kind: FileKind,
        parse: impl Fn(&str, Origin) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        let mut found = None;
        if let Some(file) = &self.file {
            if let Some(raw) = file.get(key, kind)? {
                let v = parse(&raw, Origin::File(&file.path)).map_err(|why| Error::Invalid {
                    place: format!("config file {}, key '{key}'", shown(&file.path)),
                    why,
                })?;
                found = Some(v);
            }
        }
        let env_key = env_name(key);
        if let Some(raw) = self.env.get(&env_key)? {
            let v = parse(&raw, Origin::Env).map_err(|why| Error::Invalid {
                place: format!("environment variable {env_key}"),
                why,
            })?;
            found = Some(v);
        }
        if let Some(raw) = self.flags.flag(key) {
            let v = parse(raw, Origin::Flag).map_err(|why| Error::Invalid {
                place: flag_name(key),
                why,
            })?;
            found = Some(v);
        }
        Ok(found)
    }
}

/// Reads the settings from `args`, the environment and the config file they name.
pub fn load(args: &ServeArgs, env: &Env) -> Result<Settings, Error> {
    env.check_names()?;
    let config_file = match &args.config {
        Some(p) => Some(p.clone()),
        None => env.get(ENV_CONFIG)?.map(PathBuf::from),
    };
    let file = config_file.as_deref().map(File::read).transpose()?;
    let settings = Settings::read(&Sources {
        flags: args,
        env,
        file,
    })?;
    Ok(Settings {
        config_file,
        ..settings
    })
}
