//! Actions, one file each.

pub mod exec;
