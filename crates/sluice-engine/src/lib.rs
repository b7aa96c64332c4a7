//! `sluice-engine` is the rollout state machine: given a checked [`Plan`](sluice_plan::Plan), a
//! [`Clock`] and a [`MetricSource`], each [`Rollout::tick`] evaluates the triggers, then the current
//! phase's gates, and decides — promote, pause, roll back, complete. It is pure: it performs no I/O and
//! returns [`Effect`]s (set the flag, run an action, notify) for its caller to carry out, so a two-week plan
//! runs in milliseconds under a [`VirtualClock`] and every decision can be replayed.
//!
//! ```
//! use sluice_engine::{Rollout, Status, VirtualClock, Clock, Measurement};
//! let yaml = "name: demo\nflag: f\nphases:\n  - {percent: 10, hold: 1h}\n  - {percent: 100}\n";
//! let (plan, _) = sluice_plan::load("demo.yaml", yaml, None).unwrap();
//! let clock = VirtualClock::default();
//! let mut rollout = Rollout::new(&plan);
//! rollout.start(&plan, clock.now());
//! let mut source = |_: &sluice_engine::CheckRef<'_>, _: u64| Measurement::Empty;
//! while !rollout.status.is_terminal() {
//!     clock.advance_ms(60_000);
//!     rollout.tick(&plan, clock.now(), &mut source);
//! }
//! assert_eq!(rollout.status, Status::Completed);
//! assert_eq!(clock.now(), 61 * 60_000); // one hour held at 10%, then promoted at the next tick
//! ```

#![warn(missing_docs)]

mod clock;
mod decision;
mod outbox;
mod rollout;
mod simulate;
pub mod timeline;

pub use clock::{Clock, Millis, SystemClock, VirtualClock};
pub use decision::{Bound, CheckDecision, CheckKind, Outcome, Threshold, Verdict};
pub use outbox::{outbox, OutboxItem};
pub use rollout::{
    baseline_checks, check_key, phase_baseline_checks, phase_baseline_key, sequence_key, threshold_of, Carried,
    CheckRef, CommandError, Effect, Event, Measurement, MetricSource, Rollout, Sample, Sequence, Status,
    CONTROL_AT_100_VALID_FOR,
};
pub use simulate::{simulate, simulate_with, time_limit, Replay, Simulation, Step};
pub use sluice_plan::EVENTS;
