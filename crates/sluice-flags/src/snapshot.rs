//! The compiled, immutable flag state that every evaluation reads, and the cell that swaps it atomically.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::constraint::CompiledConstraint;
use crate::flag::{FlagError, FlagMeta};
use crate::ofrep::{Reason, Resolution};
use crate::strategy::{CompiledStrategy, CompiledVariant, VariantSet};
use crate::tally::{Evaluations, Hand, Served};
use crate::unleash::{ClientFeatures, Feature, Payload};
use crate::{Context, Flag, SegmentDef};

/// The name Unleash gives "no variant".
pub const DISABLED_VARIANT: &str = "disabled";

#[derive(Debug, Clone)]
struct CompiledDependency {
    parent: Option<u32>,
    expect_enabled: bool,
    variants: Box<[Box<str>]>,
}

#[derive(Debug, Clone)]
struct CompiledFeature {
    name: Box<str>,
    enabled: bool,
    strategies: Box<[CompiledStrategy]>,
    variants: Option<VariantSet>,
    dependencies: Box<[CompiledDependency]>,
    meta: FlagMeta,
}

/// What evaluating one feature gives: Unleash's `isEnabled`, the chosen variant, and which strategy matched.
#[derive(Debug, Clone, Copy)]
struct Outcome<'s> {
    enabled: bool,
    variant: Option<&'s CompiledVariant>,
    strategy: Option<usize>,
}

const OFF: Outcome<'static> = Outcome { enabled: false, variant: None, strategy: None };

/// What OFREP answers for one flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OfrepOutcome<'s> {
    /// A value, its variant and the reason.
    Resolved(Resolution<'s>),
    /// The flag splits by a key this context lacks (the flag's key is carried).
    TargetingKeyMissing(&'s str),
}

/// The answer to Unleash's `getVariant`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantResult<'s> {
    /// Variant name, or `"disabled"`.
    pub name: &'s str,
    /// The variant's payload.
    pub payload: Option<&'s Payload>,
    /// Whether a variant was chosen.
    pub enabled: bool,
    /// Whether the feature itself is enabled for the context.
    pub feature_enabled: bool,
}

/// An immutable, compiled flag state: regexes compiled, versions, dates and networks parsed, hash prefixes
/// mixed. Evaluation borrows it and allocates nothing.
///
/// ```
/// use sluice_flags::{Context, Flag, Snapshot};
/// let mut flag = Flag::boolean("new_checkout");
/// flag.ramp.percent = 100;
/// let snapshot = Snapshot::from_flags(vec![flag], vec![]).unwrap();
/// assert!(snapshot.is_enabled("new_checkout", &Context::new().user_id("u1")));
/// let r = snapshot.resolve("new_checkout", &Context::new().user_id("u1")).unwrap();
/// assert_eq!(r.value, &serde_json::json!(true));
/// ```
#[derive(Debug)]
pub struct Snapshot {
    index: HashMap<Box<str>, u32>,
    features: Vec<CompiledFeature>,
    state: ClientFeatures,
    flags: Vec<Flag>,
    segments: Vec<SegmentDef>,
    counting: Option<Counting>,
}

/// Where a snapshot counts its OFREP answers: per feature, the tally slot of each value it can serve (in
/// the order of its values) and of `TARGETING_KEY_MISSING`.
#[derive(Debug)]
struct Counting {
    evaluations: Evaluations,
    slots: Box<[FeatureSlots]>,
}

#[derive(Debug)]
struct FeatureSlots {
    values: Box<[Option<u32>]>,
    key_missing: Option<u32>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::from_unleash(ClientFeatures::default())
    }
}

impl Snapshot {
    /// Compiles an Unleash client-API state as it is (conformance, imports). Flags get default metadata: a
    /// feature without variants is a boolean flag; one with variants serves their payloads.
    pub fn from_unleash(state: ClientFeatures) -> Snapshot {
        let metas = state.features.iter().map(FlagMeta::for_unleash).collect();
        Self::compile(state, metas, Vec::new(), Vec::new())
    }

    /// Compiles Sluice flags (ramps, overrides, kill switch) through their Unleash form. Fails on the first
    /// invalid flag, naming it and the field.
    pub fn from_flags(flags: Vec<Flag>, segments: Vec<SegmentDef>) -> Result<Snapshot, FlagError> {
        let mut features = Vec::with_capacity(flags.len());
        let mut metas = Vec::with_capacity(flags.len());
        for flag in &flags {
            let (feature, meta) = flag.compile(&segments)?;
            features.push(feature);
            metas.push(meta);
        }
        let state = ClientFeatures {
            version: 2,
            features,
            segments: Some(segments.iter().map(SegmentDef::to_unleash).collect()),
        };
        Ok(Self::compile(state, metas, flags, segments))
    }

    fn compile(state: ClientFeatures, metas: Vec<FlagMeta>, flags: Vec<Flag>, segments: Vec<SegmentDef>) -> Snapshot {
        let hostname = std::env::var("HOSTNAME").ok();
        let compiled_segments: HashMap<i64, Vec<CompiledConstraint>> = state
            .segments
            .iter()
            .flatten()
            .map(|s| (s.id, s.constraints.iter().map(CompiledConstraint::compile).collect()))
            .collect();
        let index: HashMap<Box<str>, u32> =
            state.features.iter().enumerate().map(|(i, f)| (Box::from(f.name.as_str()), i as u32)).collect();
        let features = state
            .features
            .iter()
            .zip(metas)
            .map(|(f, meta)| compile_feature(f, meta, &index, &compiled_segments, hostname.as_deref()))
            .collect();
        Snapshot { index, features, state, flags, segments, counting: None }
    }

    /// The Unleash client-API document this snapshot was compiled from, for `/api/client/features`.
    pub fn client_features(&self) -> &ClientFeatures {
        &self.state
    }

    /// The Sluice flags this snapshot was compiled from (empty for [`Snapshot::from_unleash`]).
    pub fn flags(&self) -> &[Flag] {
        &self.flags
    }

    /// The segments this snapshot was compiled with.
    pub fn segments(&self) -> &[SegmentDef] {
        &self.segments
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Flag keys, in the snapshot's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| &*f.name)
    }

    /// Unleash's `isEnabled`: `false` for an unknown flag.
    #[inline]
    pub fn is_enabled(&self, name: &str, ctx: &Context) -> bool {
        self.index.get(name).is_some_and(|&i| self.outcome(i as usize, ctx).enabled)
    }

    /// Unleash's `getVariant`.
    pub fn variant(&self, name: &str, ctx: &Context) -> VariantResult<'_> {
        let outcome = match self.index.get(name) {
            Some(&i) => self.outcome(i as usize, ctx),
            None => OFF,
        };
        variant_result(outcome)
    }

    /// The OFREP answer for one flag, or `None` when there is no such flag.
    #[inline]
    pub fn resolve(&self, key: &str, ctx: &Context) -> Option<Resolution<'_>> {
        let i = *self.index.get(key)? as usize;
        Some(self.resolve_index(i, ctx))
    }

    /// Whether the snapshot has a flag `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Whether `key` is a partial ramp that cannot bucket this context stably: its stickiness field (for
    /// `default`, userId or sessionId) is missing. OFREP answers `TARGETING_KEY_MISSING` then, where an
    /// Unleash SDK would draw at random.
    pub fn needs_targeting_key(&self, key: &str, ctx: &Context) -> bool {
        self.index.get(key).is_some_and(|&i| self.needs_key_at(i as usize, ctx))
    }

    fn needs_key_at(&self, i: usize, ctx: &Context) -> bool {
        match self.features[i].meta.split_on.as_deref() {
            None => false,
            Some("default") => ctx.user_id.is_none() && ctx.session_id.is_none(),
            Some(field) => ctx.get(field).is_none(),
        }
    }

    /// The OFREP outcome for one flag: `None` when there is no such flag. Counted in the snapshot's
    /// [`Evaluations`] when it has them (see [`count_in`](Self::count_in)).
    #[inline]
    pub fn evaluate_ofrep(&self, key: &str, ctx: &Context) -> Option<OfrepOutcome<'_>> {
        let i = *self.index.get(key)? as usize;
        let outcome = self.ofrep_at(i, ctx);
        if let Some(counting) = &self.counting {
            counting.evaluations.tally().with(|hand| self.count(counting, hand, i, &outcome));
        }
        Some(outcome)
    }

    /// The OFREP outcomes of every flag for one context, in the snapshot's order, each given to `each`:
    /// the bulk evaluation. Counted like [`evaluate_ofrep`](Self::evaluate_ofrep).
    ///
    /// ```
    /// use sluice_flags::{Context, Flag, OfrepOutcome, Snapshot};
    /// let snapshot = Snapshot::from_flags(vec![Flag::boolean("a"), Flag::boolean("b")], vec![]).unwrap();
    /// let mut variants = Vec::new();
    /// snapshot.evaluate_ofrep_each(&Context::new(), |o| {
    ///     if let OfrepOutcome::Resolved(r) = o {
    ///         variants.push((r.key, r.variant));
    ///     }
    /// });
    /// assert_eq!(variants, [("a", "off"), ("b", "off")]);
    /// ```
    pub fn evaluate_ofrep_each<'s>(&'s self, ctx: &Context, mut each: impl FnMut(OfrepOutcome<'s>)) {
        match &self.counting {
            None => (0..self.features.len()).for_each(|i| each(self.ofrep_at(i, ctx))),
            Some(counting) => counting.evaluations.tally().with(|hand| {
                for i in 0..self.features.len() {
                    let outcome = self.ofrep_at(i, ctx);
                    self.count(counting, hand, i, &outcome);
                    each(outcome);
                }
            }),
        }
    }

    #[inline]
    fn count(&self, counting: &Counting, hand: &Hand<'_>, i: usize, outcome: &OfrepOutcome<'_>) {
        let Some(slots) = counting.slots.get(i) else { return };
        let slot = match outcome {
            OfrepOutcome::TargetingKeyMissing(_) => slots.key_missing,
            OfrepOutcome::Resolved(r) => {
                // The variant borrows one of the feature's values: find which by address, then by name.
                let values = self.features[i].meta.value_names();
                let at = values
                    .clone()
                    .position(|n| std::ptr::eq(n.as_ptr(), r.variant.as_ptr()) && n.len() == r.variant.len())
                    .or_else(|| values.clone().position(|n| n == r.variant));
                at.and_then(|at| slots.values.get(at).copied().flatten())
            }
        };
        if let Some(slot) = slot {
            hand.add(slot, 1);
        }
    }

    /// Counts this snapshot's OFREP answers in `evaluations` from now on: the numbering of each (flag,
    /// variant) pair is shared with earlier snapshots counted there, so counts carry over. [`LiveFlags`]
    /// does this for every snapshot it publishes.
    pub fn count_in(&mut self, evaluations: &Evaluations) {
        let slots = self
            .features
            .iter()
            .map(|f| FeatureSlots {
                values: f.meta.value_names().map(|n| evaluations.slot(&f.name, Served::Variant(n.into()))).collect(),
                key_missing: evaluations.slot(&f.name, Served::TargetingKeyMissing),
            })
            .collect();
        self.counting = Some(Counting { evaluations: evaluations.clone(), slots });
    }

    #[inline]
    fn ofrep_at(&self, i: usize, ctx: &Context) -> OfrepOutcome<'_> {
        if self.features[i].enabled && self.needs_key_at(i, ctx) {
            OfrepOutcome::TargetingKeyMissing(&self.features[i].name)
        } else {
            OfrepOutcome::Resolved(self.resolve_index(i, ctx))
        }
    }

    /// The OFREP answers for every flag, for one context: the bulk evaluation.
    pub fn resolve_all<'s, 'c>(&'s self, ctx: &'c Context) -> impl Iterator<Item = Resolution<'s>> + 'c
    where
        's: 'c,
    {
        (0..self.features.len()).map(move |i| self.resolve_index(i, ctx))
    }

    #[inline]
    fn resolve_index(&self, i: usize, ctx: &Context) -> Resolution<'_> {
        let f = &self.features[i];
        let meta = &f.meta;
        if !f.enabled {
            return meta.resolution(&f.name, None, Reason::Disabled);
        }
        let outcome = self.outcome(i, ctx);
        if !outcome.enabled {
            return meta.resolution(&f.name, None, meta.not_enabled_reason());
        }
        let reason = outcome.strategy.map_or(Reason::Static, |s| meta.reason_of(s));
        meta.resolution(&f.name, Some(outcome.variant.map_or(DISABLED_VARIANT, |v| &*v.name)), reason)
    }

    #[inline]
    fn outcome(&self, i: usize, ctx: &Context) -> Outcome<'_> {
        let f = &self.features[i];
        if !f.enabled || !self.dependencies_hold(f, ctx) {
            return OFF;
        }
        self.strategies_outcome(f, ctx)
    }

    #[inline]
    fn strategies_outcome<'s>(&'s self, f: &'s CompiledFeature, ctx: &Context) -> Outcome<'s> {
        if f.strategies.is_empty() {
            return Outcome { enabled: true, variant: f.variants.as_ref().and_then(|v| v.select(ctx)), strategy: None };
        }
        for (i, s) in f.strategies.iter().enumerate() {
            if s.matches(ctx) {
                let set = s.variants.as_ref().or(f.variants.as_ref());
                return Outcome { enabled: true, variant: set.and_then(|v| v.select(ctx)), strategy: Some(i) };
            }
        }
        OFF
    }

    /// Unleash dependencies: one level only; a parent with parents of its own fails the child.
    fn dependencies_hold(&self, f: &CompiledFeature, ctx: &Context) -> bool {
        f.dependencies.iter().all(|d| {
            let Some(p) = d.parent else { return false };
            let parent = &self.features[p as usize];
            if !parent.dependencies.is_empty() {
                return false;
            }
            let outcome = if parent.enabled { self.strategies_outcome(parent, ctx) } else { OFF };
            if !d.expect_enabled {
                return !outcome.enabled;
            }
            if !outcome.enabled {
                return false;
            }
            d.variants.is_empty() || {
                let name = outcome.variant.map_or(DISABLED_VARIANT, |v| &*v.name);
                d.variants.iter().any(|v| &**v == name)
            }
        })
    }
}

fn variant_result(o: Outcome<'_>) -> VariantResult<'_> {
    match o.variant {
        Some(v) => {
            VariantResult { name: &v.name, payload: v.payload.as_ref(), enabled: true, feature_enabled: o.enabled }
        }
        None => VariantResult { name: DISABLED_VARIANT, payload: None, enabled: false, feature_enabled: o.enabled },
    }
}

fn compile_feature(
    f: &Feature,
    meta: FlagMeta,
    index: &HashMap<Box<str>, u32>,
    segments: &HashMap<i64, Vec<CompiledConstraint>>,
    hostname: Option<&str>,
) -> CompiledFeature {
    CompiledFeature {
        name: f.name.as_str().into(),
        enabled: f.enabled,
        strategies: f.strategies.iter().map(|s| CompiledStrategy::compile(s, &f.name, segments, hostname)).collect(),
        variants: VariantSet::compile(f.variants.as_deref().unwrap_or(&[]), &f.name, None),
        dependencies: f
            .dependencies
            .iter()
            .flatten()
            .map(|d| CompiledDependency {
                parent: index.get(d.feature.as_str()).copied(),
                expect_enabled: d.enabled.unwrap_or(true),
                variants: d.variants.iter().flatten().map(|v| Box::from(v.as_str())).collect(),
            })
            .collect(),
        meta,
    }
}

/// The live flag state: readers [`load`](LiveFlags::load) the current [`Snapshot`] without a lock; a writer
/// [`replace`](LiveFlags::replace)s it whole. A reader keeps the snapshot it loaded for as long as it holds it,
/// so one request sees one consistent state.
///
/// ```
/// use sluice_flags::{Context, Flag, LiveFlags, Snapshot};
/// let live = LiveFlags::default();
/// assert!(!live.load().is_enabled("beta", &Context::new()));
/// let mut flag = Flag::boolean("beta");
/// flag.ramp.percent = 100;
/// live.replace(Snapshot::from_flags(vec![flag], vec![]).unwrap());
/// assert!(live.load().is_enabled("beta", &Context::new().user_id("u")));
/// ```
#[derive(Debug)]
pub struct LiveFlags {
    current: ArcSwap<Snapshot>,
    evaluations: Evaluations,
}

impl Default for LiveFlags {
    fn default() -> Self {
        LiveFlags::new(Snapshot::default())
    }
}

impl LiveFlags {
    /// Starts with `snapshot`, counting its OFREP answers.
    pub fn new(mut snapshot: Snapshot) -> Self {
        let evaluations = Evaluations::default();
        snapshot.count_in(&evaluations);
        LiveFlags { current: ArcSwap::from_pointee(snapshot), evaluations }
    }

    /// The OFREP answers of every snapshot published here, by flag and variant.
    pub fn evaluations(&self) -> &Evaluations {
        &self.evaluations
    }

    /// The current snapshot; lock-free.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for a reader that keeps it across awaits.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot; readers pick it up on their next `load`.
    pub fn replace(&self, mut snapshot: Snapshot) {
        snapshot.count_in(&self.evaluations);
        self.current.store(Arc::new(snapshot));
    }
}

/// Turns an Unleash payload into the typed JSON value OFREP returns.
pub(crate) fn payload_value(p: &Payload) -> Value {
    match p.kind.as_str() {
        "number" => p.value.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(
            || Value::String(p.value.clone()),
            |n| {
                // Integers stay integers so that typed SDKs read them as such.
                p.value.trim().parse::<i64>().map(Value::from).unwrap_or(Value::Number(n))
            },
        ),
        "json" => serde_json::from_str(&p.value).unwrap_or_else(|_| Value::String(p.value.clone())),
        _ => Value::String(p.value.clone()),
    }
}
