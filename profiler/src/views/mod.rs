pub mod error;
pub mod insights;
pub mod metrics;
pub mod page;
pub mod stats;
