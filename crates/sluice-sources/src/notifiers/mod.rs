//! Notifiers, one file each, each behind [`Notifier`](crate::Notifier).

pub mod log;

/// Adds every notifier of this folder: one line each.
pub(crate) fn register(registry: &mut crate::Registry, _config: &crate::Config) {
    registry.add_notifier(log::Log);
}
