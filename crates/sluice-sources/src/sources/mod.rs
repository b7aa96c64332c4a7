//! Metric sources, one file each.

pub mod command;

use sluice_plan::model::{Check, SourceKind};

/// The source of a check: its own, inferred from its fields, or the plan's default.
pub fn kind_of(c: &Check, default: Option<SourceKind>) -> Option<SourceKind> {
    if let Some(s) = &c.source {
        return Some(s.value);
    }
    if c.query.is_some() || c.slo.is_some() {
        Some(SourceKind::Prometheus)
    } else if c.metric.is_some() {
        Some(SourceKind::Builtin)
    } else if c.http.is_some() {
        Some(SourceKind::Http)
    } else if c.command.is_some() {
        Some(SourceKind::Command)
    } else {
        default
    }
}
