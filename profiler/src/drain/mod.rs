pub mod readings;
