//! Time, as the engine sees it: milliseconds from a [`Clock`], real or virtual.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds (since the Unix epoch for [`SystemClock`], since the start for a [`VirtualClock`]).
pub type Millis = u64;

/// Where the engine gets the time. Tests and `sluice simulate` use a [`VirtualClock`].
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
    }
}

/// A clock that moves only when told to: a 24-hour hold passes in one call.
///
/// ```
/// use sluice_engine::{Clock, VirtualClock};
/// let clock = VirtualClock::default();
/// clock.advance_ms(86_400_000);
/// assert_eq!(clock.now(), 86_400_000);
/// ```
#[derive(Debug, Default)]
pub struct VirtualClock {
    now: AtomicU64,
}

impl VirtualClock {
    /// Starts at `at`.
    pub fn at(at: Millis) -> Self {
        VirtualClock { now: AtomicU64::new(at) }
    }

    /// Moves time forward.
    pub fn advance_ms(&self, ms: Millis) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}
