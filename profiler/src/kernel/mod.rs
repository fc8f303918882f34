pub mod arena;
pub mod batch;
pub mod bpf_stats;
pub mod btf;
pub mod caps;
pub mod load;
pub mod pin;
