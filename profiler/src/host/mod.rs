pub mod cgroups;
pub mod info;
