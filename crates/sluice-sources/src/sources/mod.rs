//! Metric sources, one file each. Which source a check uses is the plan's business:
//! [`Check::source_kind`](sluice_plan::model::Check::source_kind).

pub mod command;
