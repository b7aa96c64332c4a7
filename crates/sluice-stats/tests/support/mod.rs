//! Shared by the statistics tests.
pub mod sim;
