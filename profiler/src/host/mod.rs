pub mod cgroups;
pub mod info;
pub mod prefetch;
pub mod procfs;
pub mod procself;
