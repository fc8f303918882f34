//! The HTTP(S) side: the accept loop and its connection limits (server.rs), the routes
//! (router.rs), what an answer may cost (limits.rs) and basic auth (auth.rs). The answers
//! themselves are the views'.

pub mod auth;
pub mod limits;
pub mod router;
pub mod server;

pub use server::Error;
