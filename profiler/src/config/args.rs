//! The flags of `serve`, one per declared setting (table.rs), plus `--config`. clap only
//! collects their text: every value is checked by `config` like a value from the environment or
//! the file, so a bad one is named the same way whichever source it came from.

use std::{collections::BTreeMap, path::PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::{
    declare::{long_name, Apply, Initial, ENV_CONFIG},
    table::DECLARED,
};

/// What the command line says: the config file, and the text of each setting's flag by key.
#[derive(Clone, Debug, Default)]
pub struct ServeArgs {
    pub config: Option<PathBuf>,
    pub flags: BTreeMap<&'static str, String>,
}

impl ServeArgs {
    /// The flag value of `key`, if the command line has it.
    pub fn flag(&self, key: &str) -> Option<&str> {
        self.flags.get(key).map(String::as_str)
    }
}

const ABOUT: &str = "\
Every setting can also come from the environment (SYSCALL_PROFILER_<KEY>, e.g. \
SYSCALL_PROFILER_MAX_EXITED) or the --config file (key max_exited); flags win over the \
environment, which wins over the file, which wins over the defaults. SIGHUP re-reads them all.";

impl Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        let config = Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!(
                "TOML configuration file (env {ENV_CONFIG}). Re-read on SIGHUP"
            ));
        DECLARED
            .iter()
            .fold(cmd.after_help(ABOUT).arg(config), |cmd, d| {
                let default = match d.initial {
                    Initial::Value(text) | Initial::Unset(text) => text,
                };
                let reload = match d.apply {
                    Apply::Reload => ", SIGHUP applies it",
                    Apply::Restart => "",
                };
                let mut arg = Arg::new(d.key)
                    .long(long_name(d.key))
                    .value_name(d.value_name)
                    .action(ArgAction::Set)
                    .help(format!("{} [default: {default}{reload}]", d.help()));
                if d.switch {
                    // `--counts-only` alone means true; `--counts-only false` also works.
                    arg = arg.num_args(0..=1).default_missing_value("true");
                }
                cmd.arg(arg)
            })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = DECLARED
            .iter()
            .filter_map(|d| Some((d.key, m.get_one::<String>(d.key)?.clone())))
            .collect();
        Ok(ServeArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
