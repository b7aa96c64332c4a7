//! Actions, one file each, each behind [`ActionRunner`](crate::ActionRunner).

pub mod exec;
pub mod webhook;

/// Adds every action of this folder: one line each.
pub(crate) fn register(registry: &mut crate::Registry, config: &crate::Config) {
    registry.add_action(exec::Exec::new(config));
    registry.add_action(webhook::Webhook::new(config));
}
