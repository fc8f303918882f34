//! How a setting is declared. table.rs declares every setting once, as a row of
//! `declare_settings!`; the macro makes from the rows the `Settings` struct, its defaults, the
//! reading of every source, what SIGHUP applies, and [`DECLARED`](super::table::DECLARED), the
//! rows as data, from which the flags (args.rs), the file's keys, the environment's names, the
//! docs table and the packaged config file's listing are derived.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    error::Error,
    parse::{clip, Origin},
};

/// Every setting's environment variable is this prefix and its key in upper case.
pub const ENV_PREFIX: &str = "SYSCALL_PROFILER_";

/// `--config`'s variable.
pub const ENV_CONFIG: &str = "SYSCALL_PROFILER_CONFIG";
/// For tests and diagnosis: programs to leave out as if the kernel had refused them (the kernel
/// layer reads it).
pub const ENV_SKIP_PROGRAMS: &str = "SYSCALL_PROFILER_SKIP_PROGRAMS";
/// For tests and diagnosis: run the many-CPU histogram path on any host (the kernel layer reads
/// it).
pub const ENV_SHARED_SHARDS: &str = "SYSCALL_PROFILER_SHARED_SHARDS";
/// For the tests: `before-flip` or `before-deletes` makes the daemon SIGKILL itself at that
/// instant of the first checkpoint commit that retires processes (the drain layer reads it).
pub const ENV_CRASH_AT: &str = "SYSCALL_PROFILER_CRASH_AT";
/// For the tests: the length of the kernel's tid-indexed array (a power of two), small so that
/// live threads share entries (the kernel layer reads it).
pub const ENV_TIDS_ENTRIES: &str = "SYSCALL_PROFILER_TIDS_ENTRIES";
/// `top`'s basic-auth user and password (the command line would show them in `ps`); serve
/// ignores them, so one shell can export them and run both.
pub const ENV_USER: &str = "SYSCALL_PROFILER_USER";
pub const ENV_PASSWORD: &str = "SYSCALL_PROFILER_PASSWORD";

/// The variables with the prefix that are not settings, with what they do. Together with the
/// settings' they are every name the prefix may take: any other is an error, not ignored.
pub const OTHER_VARIABLES: &[(&str, &str)] = &[
    (ENV_CONFIG, "the config file, as --config"),
    (
        ENV_SKIP_PROGRAMS,
        "programs to leave out as if the kernel had refused them (NAME,…; tests and diagnosis)",
    ),
    (
        ENV_SHARED_SHARDS,
        "set to anything: the many-CPU histogram path on any host (tests and diagnosis)",
    ),
    (
        ENV_TIDS_ENTRIES,
        "a power of two: the tid-indexed array's length, small so that threads share entries \
         (tests)",
    ),
    (
        ENV_CRASH_AT,
        "before-flip or before-deletes: SIGKILL itself inside the first checkpoint commit that \
         retires processes (the restart tests)",
    ),
    (
        ENV_USER,
        "top: the basic-auth user (with SYSCALL_PROFILER_PASSWORD; serve ignores it)",
    ),
    (
        ENV_PASSWORD,
        "top: the basic-auth password (with SYSCALL_PROFILER_USER; serve ignores it)",
    ),
];

/// One setting, as data.
#[derive(Debug)]
pub struct Decl {
    /// The file key; the flag and the variable derive from it ([`Decl::flag`], [`Decl::env`]).
    pub key: &'static str,
    /// The value's placeholder in `--help`: `DURATION`, `N`, `FILE`, ….
    pub value_name: &'static str,
    pub initial: Initial,
    pub apply: Apply,
    /// One paragraph: `--help`, the docs table and the packaged config file say it.
    pub help: &'static str,
    /// What the docs table adds after the help: a link to where the setting is explained.
    #[cfg_attr(not(test), allow(dead_code))]
    pub see: Option<&'static str>,
    /// A true/false setting: its flag alone means true (`--counts-only`).
    pub switch: bool,
}

impl Decl {
    pub fn env(&self) -> String {
        env_name(self.key)
    }

    pub fn help(&self) -> String {
        self.help.trim().to_string()
    }
}

/// `--max-exited` for `max_exited`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", long_name(key))
}

/// The flag without its dashes, as clap takes it.
pub fn long_name(key: &str) -> String {
    key.replace('_', "-")
}

pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// A setting's value before any source sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initial {
    /// This text, read by the setting's own parser.
    Value(&'static str),
    /// No value (an empty list or no path); the text says what that means: "none", "all".
    Unset(&'static str),
}

/// When a changed value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// SIGHUP applies it to the running daemon.
    Reload,
    /// Set up once (the socket, the programs, the drain's clock, the HTTP stack): a change
    /// waits for the next restart, and SIGHUP says so.
    Restart,
}

/// The TOML values a file key takes (the parsers read every value as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A string.
    Text,
    /// An integer or a string (`max_response_bytes = "64MiB"`).
    Whole,
    /// A number, integer or float, or a string.
    Real,
    /// true or false.
    Bool,
}

impl FileKind {
    /// What the file must hold, for the error naming what it holds instead.
    pub fn expected(self) -> &'static str {
        match self {
            FileKind::Text => "a string",
            FileKind::Whole => "a whole number",
            FileKind::Real => "a number",
            FileKind::Bool => "true or false",
        }
    }
}

/// A type a setting may have: what the file accepts for it and how a log line shows it.
pub trait Field: Sized {
    const FILE: FileKind = FileKind::Text;
    const SWITCH: bool = false;
    fn show(&self) -> String;
    /// The value of `Initial::Unset`, for the types that have one.
    fn unset() -> Option<Self> {
        None
    }
}

impl Field for SocketAddr {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Field for Duration {
    /// In the largest unit the parser reads that shows it whole: `5m`, `1500ms`.
    fn show(&self) -> String {
        let ms = self.as_millis();
        match ms {
            0 => "0s".into(),
            _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
            _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
            _ => format!("{ms}ms"),
        }
    }
}

impl Field for usize {
    const FILE: FileKind = FileKind::Whole;
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Field for f64 {
    const FILE: FileKind = FileKind::Real;
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Field for bool {
    const FILE: FileKind = FileKind::Bool;
    const SWITCH: bool = true;
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Field for String {
    fn show(&self) -> String {
        clip(self)
    }
}

impl Field for Option<PathBuf> {
    fn show(&self) -> String {
        self.as_ref()
            .map_or("none".into(), |p| clip(&p.display().to_string()))
    }
    fn unset() -> Option<Self> {
        Some(None)
    }
}

impl<T: std::fmt::Display> Field for Vec<T> {
    fn show(&self) -> String {
        if self.is_empty() {
            return "all".into();
        }
        let all: Vec<String> = self.iter().map(T::to_string).collect();
        clip(&all.join(","))
    }
    fn unset() -> Option<Self> {
        Some(Vec::new())
    }
}

/// The sources a setting is read from (sources.rs): the value of `key` that wins, every value
/// present checked by `parse`.
pub trait Source {
    fn get<T>(
        &self,
        key: &'static str,
        file: FileKind,
        parse: impl Fn(&str, Origin) -> Result<T, String>,
    ) -> Result<Option<T>, Error>;
}

/// The initial value of a field: `Initial::Value`'s text through the setting's parser.
pub fn initial<F: Field, T: Into<F>>(
    key: &str,
    initial: Initial,
    parse: impl Fn(&str, Origin) -> Result<T, String>,
) -> F {
    match initial {
        Initial::Value(text) => parse(text, Origin::Default)
            .unwrap_or_else(|e| panic!("the default of {key} is refused by its parser: {e}"))
            .into(),
        Initial::Unset(_) => {
            F::unset().unwrap_or_else(|| panic!("{key} is declared unset but has no empty value"))
        }
    }
}

/// Makes `Settings` and `DECLARED` from rows of
///
/// ```text
/// /// Help text (the doc comment is the --help text, the docs table's and the config file's).
/// key: Type = Value("text") | Unset("what that means"), Reload | Restart, "VALUE_NAME",
///     parser (|text, origin| -> Result<_, String>) [, see "docs link"];
/// ```
///
/// The parser's result goes into the field with `Into` (a `PathBuf` into `Option<PathBuf>`).
macro_rules! declare_settings {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $ty:ty = $initial:expr, $apply:ident, $value_name:literal, $parse:expr
        $(, see $see:literal)?;
    )*) => {
        /// Every setting of `serve`, read from flags, the environment and the file.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Settings {
            /// The file they were read from, if any (`--config` or `SYSCALL_PROFILER_CONFIG`).
            pub config_file: Option<std::path::PathBuf>,
            $( $(#[doc = $doc])* pub $key: $ty, )*
        }

        /// The rows, as data.
        pub const DECLARED: &[Decl] = &[$(
            Decl {
                key: stringify!($key),
                value_name: $value_name,
                initial: $initial,
                apply: Apply::$apply,
                help: concat!($($doc),*),
                see: declare_settings!(@see $($see)?),
                switch: <$ty as Field>::SWITCH,
            },
        )*];

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    config_file: None,
                    $( $key: initial(stringify!($key), $initial, $parse), )*
                }
            }
        }

        impl Settings {
            /// Every setting, each checked in every source that sets it, in the rows' order (the
            /// first bad value is the one reported).
            pub fn read(src: &impl Source) -> Result<Settings, Error> {
                let mut s = Settings::default();
                $(
                    if let Some(v) = src.get(stringify!($key), <$ty as Field>::FILE, $parse)? {
                        s.$key = v.into();
                    }
                )*
                Ok(s)
            }

            /// The keys whose value differs in `new` and that SIGHUP cannot apply.
            pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if Apply::$apply == Apply::Restart && self.$key != new.$key {
                        changed.push(stringify!($key));
                    }
                )*
                changed
            }

            /// These settings with what SIGHUP applies taken from `new`.
            pub fn reloaded(&self, new: &Settings) -> Settings {
                Settings {
                    config_file: new.config_file.clone(),
                    $(
                        $key: if Apply::$apply == Apply::Reload {
                            new.$key.clone()
                        } else {
                            self.$key.clone()
                        },
                    )*
                }
            }

            /// "key old → new" for every setting whose value differs in `new`.
            pub fn changes(&self, new: &Settings) -> Vec<String> {
                let mut changed = Vec::new();
                $(
                    if self.$key != new.$key {
                        changed.push(format!(
                            "{} {} → {}",
                            stringify!($key),
                            Field::show(&self.$key),
                            Field::show(&new.$key)
                        ));
                    }
                )*
                changed
            }
        }
    };
    (@see) => { None };
    (@see $see:literal) => { Some($see) };
}

pub(super) use declare_settings;
