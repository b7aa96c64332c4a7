//! `sluice-flags` is Sluice's flag engine: the flag model (variants, ramps, overrides with expiry, the kill
//! switch), its compilation to the Unleash client-API model, and an Unleash-conformant evaluator that answers
//! both Unleash's `isEnabled` / `getVariant` and OpenFeature's OFREP. It is pure — no I/O, no async — and its
//! read path takes no lock: evaluation borrows an immutable [`Snapshot`] that a writer replaces atomically
//! through [`LiveFlags`]. Conformance with `@unleash/client-specification` is tested beside it
//! (`tests/conformance.rs`).
//!
//! ```
//! use sluice_flags::{Context, Flag, LiveFlags, Snapshot};
//!
//! // off/warn/enforce modes, ramping warn -> enforce at 10%.
//! let mut flag = Flag::modes("stage_validation", &["off", "warn", "enforce"]);
//! flag.ramp.base = "warn".into();
//! flag.ramp.ramped = "enforce".into();
//! flag.ramp.percent = 10;
//!
//! let live = LiveFlags::new(Snapshot::from_flags(vec![flag], vec![]).unwrap());
//! let snapshot = live.load();
//! let answer = snapshot.resolve("stage_validation", &Context::new().user_id("user-42")).unwrap();
//! assert!(answer.variant == "warn" || answer.variant == "enforce");
//! ```

#![warn(missing_docs)]

pub mod bucket;
mod constraint;
mod context;
mod flag;
pub mod import;
pub mod ofrep;
mod snapshot;
mod strategy;
pub mod tally;
pub mod unleash;

pub use context::Context;
pub use flag::{
    check_key, validate_constraint, Flag, FlagError, FlagVariant, Override, OverrideAction, Ramp, SegmentDef,
    MAX_EXPIRING_DISABLES, OPERATORS,
};
pub use snapshot::{LiveFlags, OfrepOutcome, Snapshot, VariantResult, DISABLED_VARIANT};
pub use strategy::CompiledVariant;
