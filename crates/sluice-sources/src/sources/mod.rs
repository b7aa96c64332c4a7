//! Metric sources, one file each, each behind [`Source`](crate::Source). Which source a check uses is the
//! plan's business: [`Check::source_kind`](sluice_plan::model::Check::source_kind).

pub mod builtin;
pub mod command;
pub mod http;
pub mod prometheus;

/// Adds every source of this folder: one line each.
pub(crate) fn register(registry: &mut crate::Registry, config: &crate::Config) {
    registry.add_source(command::Command::new(config));
    registry.add_source(prometheus::Prometheus::new(config));
    registry.add_source(http::Http::new(config));
    registry.add_source(builtin::Builtin::new(config.metrics.clone()));
}
