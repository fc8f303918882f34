pub mod exit;
pub mod record;
pub mod serve;
pub mod top;
