pub mod cgroups;
pub mod info;
pub mod procfs;
pub mod procself;
