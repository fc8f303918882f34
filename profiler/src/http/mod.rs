//! The HTTP(S) side: the accept loop (server.rs), its connection slots (conn.rs) and what each
//! connection's bytes pass through (stream.rs), the routes (router.rs), what a request may cost
//! (limits.rs), basic auth (auth.rs) and the thread that checks passwords (verifier.rs), and the
//! JSON body of every refusal (errors.rs). The answers themselves are the views'.

pub mod auth;
pub mod cache;
mod conn;
mod errors;
pub mod limits;
pub mod router;
pub mod server;
mod stream;
mod verifier;

pub use server::Error;
