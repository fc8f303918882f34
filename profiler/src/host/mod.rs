pub mod cgroups;
pub mod clock;
pub mod info;
pub mod prefetch;
pub mod procfs;
pub mod procself;
