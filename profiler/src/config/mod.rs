pub mod args;
pub mod sources;
pub mod web;
