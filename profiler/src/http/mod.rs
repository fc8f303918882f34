pub mod router;
pub mod server;
