//! Every setting of the daemon and where it comes from: flags, the environment and a TOML file,
//! in that order of precedence, over the defaults. table.rs declares each setting once (the
//! rest derives from its row: declare.rs); sources.rs reads them, parse.rs checks each value,
//! error.rs says what is wrong and where. The web config file (`web.rs`) is read here too.

pub mod args;
pub mod declare;
pub mod error;
pub mod insights;
pub mod parse;
pub mod sources;
pub mod table;
pub mod web;

pub use error::Error;
pub use table::{Filter, Settings};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
