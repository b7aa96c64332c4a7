//! Built-in metrics: what applications report about the requests a flag served (`POST /api/v1/metrics`),
//! aggregated in memory per flag, variant and how the variant was served, for the `builtin` source.
//!
//! Each series keeps its running totals (count, errors, a latency histogram, the moments of each named
//! value), each second's requests for the last two minutes, checkpoints of the totals — one a minute
//! for two hours, one an hour for eight days — and marks: the totals before the exact seconds its windows
//! start and end at, taken the first time a window is measured while the seconds still cover it. So a
//! window is a sum of seconds (in the last two minutes), or the difference of a mark and the totals (to
//! the second, for as long as the window is measured), or of two checkpoints (to the minute, or the
//! hour, for a window first measured later): "since the current percentage took effect" (a phase may last
//! seconds in a demo or days in production), "the last 15 minutes", "the hour before the rollout
//! started". Windows round inwards: they never take in a request from before their start or after their
//! end. Memory is bounded by the number of series, not by traffic or time: the seconds fill in two
//! minutes and then stay. Observations an override or a disabled flag served are counted but
//! belong to no cohort.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use sluice_engine::Millis;
use sluice_flags::ofrep::Reason;
use sluice_stats::{Histogram, Moments};

/// Most observations in one batch.
pub const MAX_BATCH: usize = 10_000;
/// Most value names per flag.
pub const MAX_NAMES: usize = 32;
/// Most distinct stickiness keys remembered per flag for the traffic-split check.
const MAX_KEYS: usize = 2_000_000;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60_000;
/// How long each second's requests are kept: long enough for a rollout's first look at a new window (a
/// tick every `analysis.interval`, a minute in the examples) to mark its start to the second. Ten minutes
/// of seconds cost about 1 KB each per series and were most of a busy server's memory (BENCHMARKS.md, the
/// soak).
const SECONDS_KEPT: u64 = 2 * MINUTE;
/// Most marks kept per series, the least recently used dropped first: a rollout's windows use two or three.
const MARKS_KEPT: usize = 16;
/// How old a window's start is when it is marked: a rollout ticking every minute measures it at least once
/// between this age and [`SECONDS_KEPT`], and a sliding window shorter than this (a new start at every
/// tick) is never marked.
const MARK_AFTER: u64 = 45 * SECOND;
const HOUR: u64 = 3_600_000;

/// One request's outcome, as an application reports it. Its strings borrow from the request body (a
/// batch of 10,000 allocates nothing per entry unless a string has escapes): ingestion shares the cores
/// that answer flag evaluations.
///
/// ```
/// let o: sluice_sources::metrics::Observation = serde_json::from_str(
///     r#"{"flag": "checkout", "variant": "on", "reason": "SPLIT", "key": "user-1", "ok": true, "latency_ms": 12.5, "values": {"consistency_score": 0.93}}"#,
/// ).unwrap();
/// assert_eq!(o.values.get("consistency_score"), Some(0.93));
/// assert_eq!(&*o.flag, "checkout");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation<'a> {
    /// The flag evaluated.
    #[serde(borrow)]
    pub flag: Text<'a>,
    /// The variant served.
    #[serde(borrow)]
    pub variant: Text<'a>,
    /// Why, as OFREP answered (`SPLIT`, `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `DISABLED`).
    pub reason: Reason,
    /// The stickiness key (the user id): counted once per key in the traffic-split check.
    #[serde(default, borrow)]
    pub key: Option<Text<'a>>,
    /// Whether the request succeeded.
    pub ok: bool,
    /// How long it took.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Named numbers (`consistency_score`, `compute_savings_pct`): at most 32 names per flag, each ≥ 0.
    #[serde(default, borrow)]
    pub values: Values<'a>,
}

/// A string of a request body: borrowed from it, or owned when JSON escapes had to be undone.
///
/// ```
/// let t: sluice_sources::metrics::Text = serde_json::from_str(r#""on""#).unwrap();
/// assert_eq!(&*t, "on");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(std::borrow::Cow::Borrowed(s))
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(std::borrow::Cow::Owned(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(s)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// An observation's named values, in the order sent; a name sent twice is refused.
///
/// ```
/// let v: sluice_sources::metrics::Values = serde_json::from_str(r#"{"score": 0.5}"#).unwrap();
/// assert_eq!(v.get("score"), Some(0.5));
/// assert!(serde_json::from_str::<sluice_sources::metrics::Values>(r#"{"a": 1, "a": 2}"#).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values<'a>(pub Vec<(Text<'a>, f64)>);

impl Values<'_> {
    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| *v)
    }

    /// Each name and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, v)| (&**n, *v))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Values<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Values<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of named numbers")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out: Vec<(Text<'a>, f64)> = Vec::with_capacity(map.size_hint().unwrap_or(2).min(MAX_NAMES));
                while let Some((name, v)) = map.next_entry::<Text<'a>, f64>()? {
                    // Bounded before the duplicate scan: the scan is quadratic in the names.
                    if out.len() == MAX_NAMES {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_NAMES} values in one observation"
                        )));
                    }
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!("the value `{}` is given twice", &*name)));
                    }
                    out.push((name, v));
                }
                Ok(Values(out))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Every [`Served`], by its discriminant (the index of its series in a variant's `[Series; 3]`).
const SERVED: [Served; 3] = [Served::Split, Served::Plain, Served::Excluded];

/// Which requests a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Served {
    /// Served by the ramp's percentage split (OFREP `SPLIT`): the canary.
    Split = 0,
    /// Served the base or a fixed value (`DEFAULT`, `STATIC`): the control when it is the ramp's base
    /// variant, and part of the flag's whole traffic.
    Plain = 1,
    /// An override or a disabled flag: in no cohort.
    Excluded = 2,
}

impl Served {
    fn of(reason: Reason) -> Served {
        match reason {
            Reason::Split => Served::Split,
            Reason::Static | Reason::Default | Reason::Unknown => Served::Plain,
            Reason::TargetingMatch | Reason::Disabled | Reason::Error => Served::Excluded,
        }
    }
}

/// The totals of a set of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Outcomes: `n` requests, `sum` errors.
    pub errors: Moments,
    /// Latencies.
    pub latency: Histogram,
    /// Each named value's moments.
    pub values: BTreeMap<String, Moments>,
}

impl Aggregate {
    fn add(&mut self, o: &Observation<'_>) {
        self.errors.add(if o.ok { 0.0 } else { 1.0 });
        if let Some(ms) = o.latency_ms {
            self.latency.add(ms);
        }
        for (name, v) in o.values.iter() {
            match self.values.get_mut(name) {
                Some(m) => m.add(v),
                None => self.values.entry(name.to_string()).or_default().add(v),
            }
        }
    }

    /// Another aggregate's requests too.
    pub fn merge(&mut self, other: &Aggregate) {
        self.errors.merge(&other.errors);
        self.latency.merge(&other.latency);
        for (name, m) in &other.values {
            self.values.entry(name.clone()).or_default().merge(m);
        }
    }

    /// The requests since `earlier` (a snapshot of the same series).
    pub fn since(&self, earlier: &Aggregate) -> Aggregate {
        Aggregate {
            errors: self.errors.since(&earlier.errors),
            latency: self.latency.since(&earlier.latency),
            values: self
                .values
                .iter()
                .map(|(k, m)| (k.clone(), m.since(&earlier.values.get(k).copied().unwrap_or_default())))
                .collect(),
        }
    }
}

/// One series: running totals and their checkpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Series {
    total: Aggregate,
    minutes: VecDeque<(Millis, Aggregate)>,
    hours: VecDeque<(Millis, Aggregate)>,
    /// Each second's requests (not the totals), for the last two minutes.
    #[serde(default)]
    seconds: VecDeque<(Millis, Aggregate)>,
    /// From when `seconds` holds every request.
    #[serde(default)]
    seconds_complete_from: Millis,
    /// Whether seconds were dropped: until then `seconds` holds every request of the series.
    #[serde(default)]
    seconds_pruned: bool,
    /// The totals before a second a window starts or ends at, taken from the seconds once that second was
    /// past: the window stays exact after its seconds are dropped. The most recently used last.
    #[serde(default)]
    marks: Vec<(Millis, Aggregate)>,
    /// The saved text of what no longer changes, for the next save.
    #[serde(skip)]
    text: SavedText,
}

/// The JSON text of a series' entries that no longer change — every second but the current one, the
/// checkpoints, the marks — kept from one save to the next, so that a save serializes what is new
/// rather than two minutes of seconds and up to eight days of checkpoints every two seconds under the
/// lock that ingestion takes (BENCHMARKS.md, the soak: the OFREP p99 grew with the server's uptime).
#[derive(Debug, Default, Clone)]
struct SavedText {
    seconds: VecDeque<(Millis, String)>,
    minutes: VecDeque<(Millis, String)>,
    hours: VecDeque<(Millis, String)>,
    marks: Vec<(Millis, String)>,
}

fn aggregate_json(a: &Aggregate) -> String {
    serde_json::to_string(a).expect("an aggregate serializes")
}

/// Writes `entries` (in time order) as a JSON array of `[ms, aggregate]`, the first `frozen` of them
/// from `text` (in the same order), which learns those it did not have and forgets those pruned.
fn write_entries(
    out: &mut String,
    entries: &VecDeque<(Millis, Aggregate)>,
    frozen: usize,
    text: &mut VecDeque<(Millis, String)>,
) {
    let first = entries.front().map(|(t, _)| *t);
    while text.front().is_some_and(|(t, _)| first.is_none_or(|first| *t < first)) {
        text.pop_front();
    }
    out.push('[');
    for (i, (t, a)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{t},");
        if i < frozen {
            if text.get(i).map(|(known, _)| *known) != Some(*t) {
                text.truncate(i);
                text.push_back((*t, aggregate_json(a)));
            }
            out.push_str(&text[i].1);
        } else {
            out.push_str(&aggregate_json(a));
        }
        out.push(']');
    }
    out.push(']');
}

impl Series {
    /// Writes the series as its derived `Serialize` would, with the text of what has not changed since
    /// the last save taken from [`SavedText`].
    fn write_saved(&mut self, out: &mut String) {
        let text = &mut self.text;
        out.push_str("{\"total\":");
        out.push_str(&aggregate_json(&self.total));
        out.push_str(",\"minutes\":");
        write_entries(out, &self.minutes, self.minutes.len(), &mut text.minutes);
        out.push_str(",\"hours\":");
        write_entries(out, &self.hours, self.hours.len(), &mut text.hours);
        // Only the current second still takes requests.
        out.push_str(",\"seconds\":");
        write_entries(out, &self.seconds, self.seconds.len().saturating_sub(1), &mut text.seconds);
        let _ = write!(
            out,
            ",\"seconds_complete_from\":{},\"seconds_pruned\":{},\"marks\":[",
            self.seconds_complete_from, self.seconds_pruned
        );
        // Marks are reordered as they are used, never changed: their text is found by time.
        text.marks.retain(|(t, _)| self.marks.iter().any(|(m, _)| m == t));
        for (i, (t, a)) in self.marks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let known = match text.marks.iter().position(|(m, _)| m == t) {
                Some(k) => k,
                None => {
                    text.marks.push((*t, aggregate_json(a)));
                    text.marks.len() - 1
                }
            };
            let _ = write!(out, "[{t},{}]", text.marks[known].1);
        }
        out.push_str("]}");
    }

    /// Whether `seconds` holds every request from `at` on.
    fn seconds_cover(&self, at: Millis) -> bool {
        !self.seconds.is_empty() && (!self.seconds_pruned || at >= self.seconds_complete_from)
    }

    /// The requests from `from` to `to` (the end: every second that started at or after `from` and, when
    /// `to` is given, ended by it), to the second, when the last two minutes' seconds cover the window.
    fn seconds_between(&self, from: Millis, to: Option<Millis>) -> Option<Aggregate> {
        if !self.seconds_cover(from) {
            return None;
        }
        let mut out = Aggregate::default();
        let within = |t: Millis| t >= from && to.is_none_or(|to| t + SECOND <= to);
        for (_, a) in self.seconds.iter().filter(|(t, _)| within(*t)) {
            out.merge(a);
        }
        Some(out)
    }

    /// The totals of every request before the second `at` (a whole second), exactly: from its mark, or
    /// from the seconds while they cover it — then marked, once a request at or after `at` shows that no
    /// request can arrive before it any more. `None` when neither knows.
    fn totals_before(&mut self, at: Millis) -> Option<Aggregate> {
        if self.touch_mark(at) {
            return self.marks.last().map(|(_, totals)| totals.clone());
        }
        if !self.seconds_cover(at) {
            return None;
        }
        let mut after = Aggregate::default();
        for (_, a) in self.seconds.iter().filter(|(t, _)| *t >= at) {
            after.merge(a);
        }
        let totals = self.total.since(&after);
        if self.seconds.back().is_some_and(|(t, _)| *t >= at) {
            if self.marks.len() >= MARKS_KEPT {
                self.marks.remove(0);
            }
            self.marks.push((at, totals.clone()));
        }
        Some(totals)
    }

    /// Whether `at` is marked; if so, its mark becomes the most recently used (the last).
    fn touch_mark(&mut self, at: Millis) -> bool {
        let Some(i) = self.marks.iter().position(|(t, _)| *t == at) else { return false };
        let mark = self.marks.remove(i);
        self.marks.push(mark);
        true
    }

    /// The requests from `from` to `to` (to now when `None`), rounded inwards: sums of seconds while they
    /// cover the window, marks after that, checkpoints for a window first measured later still.
    fn window(&mut self, from: Millis, to: Option<Millis>) -> Aggregate {
        let start = from.div_ceil(SECOND) * SECOND;
        let end = to.map(|t| t - t % SECOND);
        if let Some(recent) = self.seconds_between(from, to) {
            // Summed the same way for as long as the seconds last; marked once it is [`MARK_AFTER`] old, for
            // when they are gone.
            let newest = self.seconds.back().map_or(0, |(t, _)| *t);
            for at in std::iter::once(start).chain(end).filter(|at| at + MARK_AFTER <= newest) {
                if !self.touch_mark(at) {
                    self.totals_before(at);
                }
            }
            return recent;
        }
        let before_start = self.totals_before(start).unwrap_or_else(|| self.from(from));
        let before_end = match (to, end) {
            (Some(to), Some(end)) => self.totals_before(end).unwrap_or_else(|| self.before(to)),
            _ => self.total.clone(),
        };
        before_end.since(&before_start)
    }

    fn add(&mut self, o: &Observation<'_>, now: Millis) {
        // The totals as they stood at the start of this minute (and hour): nothing was added in between.
        let minute = now - now % MINUTE;
        if self.minutes.back().is_none_or(|(t, _)| *t < minute) {
            self.minutes.push_back((minute, self.total.clone()));
            while self.minutes.front().is_some_and(|(t, _)| *t + 2 * HOUR < minute) {
                self.minutes.pop_front();
            }
        }
        let hour = now - now % HOUR;
        if self.hours.back().is_none_or(|(t, _)| *t < hour) {
            self.hours.push_back((hour, self.total.clone()));
            while self.hours.front().is_some_and(|(t, _)| *t + 8 * 24 * HOUR < hour) {
                self.hours.pop_front();
            }
        }
        let second = now - now % SECOND;
        if self.seconds.is_empty() {
            self.seconds_complete_from = second;
        }
        if self.seconds.back().is_none_or(|(t, _)| *t < second) {
            self.seconds.push_back((second, Aggregate::default()));
            while self.seconds.front().is_some_and(|(t, _)| *t + SECONDS_KEPT < second) {
                // Every request after the dropped second is still here, even across a quiet spell.
                let (dropped, _) = self.seconds.pop_front().expect("a front");
                self.seconds_pruned = true;
                self.seconds_complete_from = dropped + SECOND;
            }
        }
        if let Some((_, a)) = self.seconds.back_mut() {
            a.add(o);
        }
        self.total.add(o);
    }

    /// The totals of what came before `at`, to the minute (to the hour beyond two hours): the latest
    /// checkpoint at or before it, rounding down — a window's end never takes in requests after it.
    fn before(&self, at: Millis) -> Aggregate {
        let in_minutes = self.minutes.front().is_some_and(|(t, _)| *t <= at);
        let list = if in_minutes { &self.minutes } else { &self.hours };
        list.iter().rev().find(|(t, _)| *t <= at).map(|(_, a)| a.clone()).unwrap_or_default()
    }

    /// The totals a window starting at `at` counts from: the earliest checkpoint at or after it, rounding
    /// up — a window's start never takes in requests before it (a percentage's sequence never includes
    /// the minute before it took effect); the running totals when nothing was checkpointed since.
    fn from(&self, at: Millis) -> Aggregate {
        let first = |q: &VecDeque<(Millis, Aggregate)>| q.iter().find(|(t, _)| *t >= at).cloned();
        match (first(&self.minutes), first(&self.hours)) {
            (Some(m), Some(h)) => {
                if h.0 < m.0 {
                    h.1
                } else {
                    m.1
                }
            }
            (Some((_, a)), None) | (None, Some((_, a))) => a,
            (None, None) => self.total.clone(),
        }
    }
}

/// The distinct stickiness keys of one flag's split since a moment, each counted under the variant it
/// was last served: a client whose cached evaluation lagged behind a percentage change moves over when
/// it refetches, rather than counting against the split forever.
#[derive(Debug, Default)]
struct Keys {
    since: Millis,
    variants: Vec<String>,
    latest: HashMap<u64, u16, std::hash::BuildHasherDefault<Hashed>>,
    by_variant: HashMap<String, u64>,
}

/// The hasher of a key that is already a hash ([`hash`]): only mixed, so that the table's bucket bits are
/// uniform (FNV's low bits are not), without hashing the key a second time on every observation.
#[derive(Debug, Default)]
struct Hashed(u64);

impl std::hash::Hasher for Hashed {
    fn finish(&self) -> u64 {
        // splitmix64's finalizer.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Keys {
    fn saw(&mut self, key: &str, variant: &str) {
        let index = match self.variants.iter().position(|v| v == variant) {
            Some(i) => i as u16,
            None => {
                self.variants.push(variant.to_string());
                (self.variants.len() - 1) as u16
            }
        };
        let h = hash(key);
        match self.latest.get(&h).copied() {
            Some(old) if old == index => {}
            Some(old) => {
                self.latest.insert(h, index);
                if let Some(n) = self.by_variant.get_mut(&self.variants[old as usize]) {
                    *n = n.saturating_sub(1);
                }
                *self.by_variant.entry(variant.to_string()).or_default() += 1;
            }
            None if self.latest.len() < MAX_KEYS => {
                self.latest.insert(h, index);
                *self.by_variant.entry(variant.to_string()).or_default() += 1;
            }
            None => {}
        }
    }
}

#[derive(Debug, Default)]
struct FlagMetrics {
    names: std::collections::BTreeSet<String>,
    /// By variant, then by [`Served`] (its index): looked up without allocating on the hot path.
    series: Vec<(String, [Series; 3])>,
    keys: Option<Keys>,
    observed: u64,
}

impl FlagMetrics {
    /// Adds this flag's requests of `variant` served as `served` between `from` and `to` to `out`.
    fn window_into(
        &mut self,
        out: &mut Aggregate,
        variant: Option<&str>,
        served: &[Served],
        from: Millis,
        to: Option<Millis>,
    ) {
        for (v, by) in &mut self.series {
            if variant.is_some_and(|want| want != v.as_str()) {
                continue;
            }
            for (i, series) in by.iter_mut().enumerate() {
                if served.contains(&SERVED[i]) && series.total.errors.n > 0 {
                    out.merge(&series.window(from, to));
                }
            }
        }
    }

    /// Keeps the marks `earlier` (this flag's previous copy of another replica's save) took: marks are
    /// taken by the replica that measures, and a window's start stays exact across that replica's saves.
    fn keep_marks(&mut self, earlier: &mut FlagMetrics) {
        for (v, by) in &mut self.series {
            if let Some((_, old)) = earlier.series.iter_mut().find(|(known, _)| known == v) {
                for (series, old) in by.iter_mut().zip(old.iter_mut()) {
                    if series.marks.is_empty() {
                        series.marks = std::mem::take(&mut old.marks);
                    }
                }
            }
        }
    }

    /// The body [`FlagMetrics::parse`] reads ([`Saved`]), written from the live aggregates without
    /// copying them and, for what has not changed since the last save, from its kept text.
    fn saved_body(&mut self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("{\"names\":");
        out.push_str(&serde_json::to_string(&self.names).expect("names serialize"));
        let _ = write!(out, ",\"observed\":{},\"series\":[", self.observed);
        let mut first = true;
        for (v, by) in &mut self.series {
            for (i, series) in by.iter_mut().enumerate() {
                if series.total.errors.n == 0 {
                    continue;
                }
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                let variant = serde_json::to_string(v).expect("a name serializes");
                let served = serde_json::to_string(&SERVED[i]).expect("a name serializes");
                let _ = write!(out, "[{variant},{served},");
                series.write_saved(&mut out);
                out.push(']');
            }
        }
        out.push_str("]}");
        out
    }

    /// A flag's aggregates from their saved body.
    fn parse(body: &str) -> Result<FlagMetrics, serde_json::Error> {
        let s: Saved = serde_json::from_str(body)?;
        let mut f = FlagMetrics { names: s.names, observed: s.observed, series: Vec::new(), keys: None };
        for (v, served, series) in s.series {
            let at = match f.series.iter().position(|(known, _)| *known == v) {
                Some(at) => at,
                None => {
                    f.series.push((v, Default::default()));
                    f.series.len() - 1
                }
            };
            f.series[at].1[served as usize] = series;
        }
        Ok(f)
    }
}

/// A flag's aggregates as saved in the store (the traffic-split key sets are not: a restart starts them
/// again).
#[derive(Deserialize)]
struct Saved {
    names: std::collections::BTreeSet<String>,
    observed: u64,
    series: Vec<(String, Served, Series)>,
}

/// The name a flag's aggregates are kept under in the environment `env` (in memory and in the store): one
/// environment's outcomes never reach another's checks, and no flag key holds `@`.
///
/// ```
/// assert_eq!(sluice_sources::metrics::key("staging", "checkout"), "checkout@staging");
/// ```
pub fn key(env: &str, flag: &str) -> String {
    format!("{flag}@{env}")
}

/// Every flag's built-in metrics. Shared by the ingestion endpoint (writes) and the `builtin` source.
#[derive(Debug, Default)]
pub struct Metrics {
    flags: Mutex<HashMap<String, FlagMetrics>>,
    /// Flags changed since they were last saved.
    dirty: Mutex<HashSet<String>>,
    /// What the other replicas on the same database observed, as they last saved it: merged into every
    /// window, so that the leader decides on all the traffic and not only the share it received itself.
    peers: Mutex<HashMap<String, HashMap<String, FlagMetrics>>>,
}

/// A batch entry's problem: its index and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The entry's index in the batch (`None`: the batch itself).
    pub index: Option<usize>,
    /// What to fix.
    pub message: String,
}

impl Metrics {
    /// Checks a batch against the rules that need no catalog (sizes, numbers, names) and records it whole,
    /// or nothing. The caller checks flags and variants first.
    pub fn record(&self, batch: &[Observation<'_>], now: Millis) -> Result<(), Invalid> {
        if batch.len() > MAX_BATCH {
            return Err(Invalid {
                index: None,
                message: format!("{} observations in one batch: send at most {MAX_BATCH}", batch.len()),
            });
        }
        for (i, o) in batch.iter().enumerate() {
            let bad = |m: String| Err(Invalid { index: Some(i), message: m });
            if let Some(ms) = o.latency_ms {
                if !ms.is_finite() || ms < 0.0 {
                    return bad(format!("latency_ms is {ms}: a duration is a finite number ≥ 0"));
                }
            }
            for (name, v) in o.values.iter() {
                if !v.is_finite() || v < 0.0 {
                    return bad(format!("values.{name} is {v}: a value is a finite number ≥ 0"));
                }
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !ok {
                    return bad(format!("values: `{name}` is not a name (letters, digits, `_`, `.`; 64 at most)"));
                }
            }
        }
        let mut flags = self.flags.lock();
        // Names first, for the whole batch: a batch that would pass the limit changes nothing. A batch is
        // usually one flag's, or a few flags' in runs: each run looks its flag up once.
        let mut added: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::new();
        let mut at = 0;
        for run in batch.chunk_by(|a, b| a.flag == b.flag) {
            let flag: &str = &run[0].flag;
            let known = flags.get(flag).map(|f| &f.names);
            let new = added.entry(flag).or_default();
            for (i, o) in run.iter().enumerate() {
                for (name, _) in o.values.iter() {
                    if !known.is_some_and(|k| k.contains(name)) {
                        new.insert(name);
                    }
                }
                if known.map_or(0, |k| k.len()) + new.len() > MAX_NAMES {
                    return Err(Invalid {
                        index: Some(at + i),
                        message: format!("flag `{flag}` would have more than {MAX_NAMES} value names"),
                    });
                }
            }
            at += run.len();
        }
        let mut dirty = self.dirty.lock();
        for this in batch.chunk_by(|a, b| a.flag == b.flag) {
            let flag: &str = &this[0].flag;
            if !dirty.contains(flag) {
                dirty.insert(flag.to_string());
            }
            if !flags.contains_key(flag) {
                flags.insert(flag.to_string(), FlagMetrics::default());
            }
            let f = flags.get_mut(flag).expect("inserted");
            f.observed += this.len() as u64;
            for o in this {
                for (name, _) in o.values.iter() {
                    if !f.names.contains(name) {
                        f.names.insert(name.to_string());
                    }
                }
                let served = Served::of(o.reason);
                let variant: &str = &o.variant;
                // A flag has a handful of variants: a scan beats hashing the name.
                let at = match f.series.iter().position(|(v, _)| v == variant) {
                    Some(at) => at,
                    None => {
                        f.series.push((variant.to_string(), Default::default()));
                        f.series.len() - 1
                    }
                };
                f.series[at].1[served as usize].add(o, now);
                // The split's users: the ramp's (SPLIT) and those it left on the base (DEFAULT).
                if let (Served::Split | Served::Plain, Some(key), Some(keys)) = (served, &o.key, f.keys.as_mut()) {
                    keys.saw(key, variant);
                }
            }
        }
        Ok(())
    }

    /// The requests of `flag`'s `variant` served as `served` between `from` and `to` (ms; `to` at most
    /// now): `None` for a series never seen.
    pub fn window(
        &self,
        flag: &str,
        variant: Option<&str>,
        served: &[Served],
        from: Millis,
        to: Option<Millis>,
    ) -> Aggregate {
        let mut out = Aggregate::default();
        if let Some(f) = self.flags.lock().get_mut(flag) {
            f.window_into(&mut out, variant, served, from, to);
        }
        for flags in self.peers.lock().values_mut() {
            if let Some(f) = flags.get_mut(flag) {
                f.window_into(&mut out, variant, served, from, to);
            }
        }
        out
    }

    /// Distinct stickiness keys of `flag`'s split by variant since `since`; the count starts (empty) when
    /// `since` changes — a new percentage is a new sequence.
    pub fn split_keys(&self, flag: &str, since: Millis) -> BTreeMap<String, u64> {
        let mut flags = self.flags.lock();
        let f = flags.entry(flag.to_string()).or_default();
        match &f.keys {
            Some(k) if k.since == since => k.by_variant.iter().map(|(v, n)| (v.clone(), *n)).collect(),
            _ => {
                f.keys = Some(Keys { since, ..Keys::default() });
                BTreeMap::new()
            }
        }
    }

    /// The flags changed since the last call, each as the JSON body to save; they are clean afterwards
    /// (call [`Metrics::unsaved`] with their names if saving them failed).
    pub fn to_save(&self) -> Vec<(String, String)> {
        self.take_dirty().into_iter().filter_map(|name| self.saved_body(&name).map(|body| (name, body))).collect()
    }

    /// The flags changed since the last call, clean afterwards: write each with [`Metrics::saved_body`]
    /// (a caller that answers flag evaluations on the same threads yields between flags).
    pub fn take_dirty(&self) -> Vec<String> {
        std::mem::take(&mut *self.dirty.lock()).into_iter().collect()
    }

    /// `flag`'s aggregates as the JSON body to save, taking the lock for this flag only.
    pub fn saved_body(&self, flag: &str) -> Option<String> {
        let mut flags = self.flags.lock();
        let f = flags.get_mut(flag)?;
        Some(f.saved_body())
    }

    /// Flags whose save failed: saved again next time.
    pub fn unsaved(&self, names: impl IntoIterator<Item = String>) {
        self.dirty.lock().extend(names);
    }

    /// Loads what [`Metrics::to_save`] gave, as the store kept it; a body this version cannot read is
    /// skipped with a warning (its flag starts empty).
    pub fn restore(&self, saved: Vec<(String, String)>) {
        let mut flags = self.flags.lock();
        for (name, body) in saved {
            match FlagMetrics::parse(&body) {
                Ok(f) => {
                    flags.insert(name, f);
                }
                Err(e) => {
                    tracing::warn!(flag = %name, error = %e, "saved built-in metrics do not parse; starting empty")
                }
            }
        }
    }

    /// Replaces what the other replicas observed with what they saved last: (replica, flag, body). Rows of
    /// this replica's own name are not given here (they are in [`Metrics::restore`]).
    pub fn set_peers(&self, saved: Vec<(String, String, String)>) {
        let mut peers: HashMap<String, HashMap<String, FlagMetrics>> = HashMap::new();
        for (replica, flag, body) in saved {
            match FlagMetrics::parse(&body) {
                Ok(f) => {
                    peers.entry(replica).or_default().insert(flag, f);
                }
                Err(e) => {
                    tracing::warn!(%replica, %flag, error = %e, "a replica's saved metrics do not parse; left out")
                }
            }
        }
        let mut current = self.peers.lock();
        for (replica, flags) in &mut peers {
            for (flag, f) in flags.iter_mut() {
                if let Some(earlier) = current.get_mut(replica).and_then(|r| r.get_mut(flag)) {
                    f.keep_marks(earlier);
                }
            }
        }
        *current = peers;
    }

    /// Keeps the aggregates of the environment `from` under its new name `to` (the store renames its rows
    /// in the same change), this replica's and what it holds of the others'.
    pub fn rename_env(&self, from: &str, to: &str) {
        let (old, new) = (format!("@{from}"), format!("@{to}"));
        let renamed = |name: &str| name.strip_suffix(old.as_str()).map(|flag| format!("{flag}{new}"));
        let rekey = |map: &mut HashMap<String, FlagMetrics>| {
            let moving: Vec<String> = map.keys().filter(|k| k.ends_with(old.as_str())).cloned().collect();
            for name in moving {
                if let (Some(f), Some(to)) = (map.remove(&name), renamed(&name)) {
                    map.insert(to, f);
                }
            }
        };
        rekey(&mut self.flags.lock());
        for flags in self.peers.lock().values_mut() {
            rekey(flags);
        }
        let mut dirty = self.dirty.lock();
        let moving: Vec<String> = dirty.iter().filter(|k| k.ends_with(old.as_str())).cloned().collect();
        for name in moving {
            dirty.remove(&name);
            dirty.extend(renamed(&name));
        }
    }

    /// Observations recorded for `flag` since the start.
    pub fn observed(&self, flag: &str) -> u64 {
        let own = self.flags.lock().get(flag).map_or(0, |f| f.observed);
        let peers: u64 = self.peers.lock().values().filter_map(|f| f.get(flag)).map(|f| f.observed).sum();
        own + peers
    }
}

/// A stickiness key's 64-bit hash (FNV-1a: stable, and unrelated to the ramp's murmur3 bucketing).
fn hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(variant: &str, ok: bool, ms: f64) -> Observation<'_> {
        Observation {
            flag: "f".into(),
            variant: variant.into(),
            reason: Reason::Split,
            key: Some(format!("{variant}-{ms}").into()),
            ok,
            latency_ms: Some(ms),
            values: Values(vec![("score".into(), ms / 10.0)]),
        }
    }

    /// The body as `Saved`'s derived form would write it, with nothing kept from an earlier save.
    fn derived_body(m: &Metrics, flag: &str) -> serde_json::Value {
        let flags = m.flags.lock();
        let f = &flags[flag];
        let series: Vec<serde_json::Value> = f
            .series
            .iter()
            .flat_map(|(v, by)| by.iter().enumerate().map(move |(i, s)| (v, SERVED[i], s)))
            .filter(|(_, _, s)| s.total.errors.n > 0)
            .map(|(v, served, s)| serde_json::json!([v, served, s]))
            .collect();
        serde_json::json!({"names": f.names, "observed": f.observed, "series": series})
    }

    #[test]
    fn a_save_writes_what_the_derived_form_would_with_kept_text_across_saves() {
        let m = Metrics::default();
        let t0 = 10 * HOUR;
        let mut t = t0;
        // Four minutes of a request every 700 ms (seconds pruned, new minutes), windows that take marks
        // and use them again in another order, a save every few seconds.
        for step in 0..350u64 {
            m.record(&[obs(if step % 3 == 0 { "off" } else { "on" }, step % 7 != 0, 10.0 + step as f64)], t).unwrap();
            if step % 20 == 0 {
                m.window("f", Some("on"), &[Served::Split], t0 + (step / 40) * SECOND, None);
                m.window("f", Some("on"), &[Served::Split], t0, None);
            }
            if step % 4 == 0 {
                let body = m.saved_body("f").unwrap();
                let written: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(written, derived_body(&m, "f"), "at step {step}");
            }
            t += 700;
        }
        let restored = FlagMetrics::parse(&m.saved_body("f").unwrap()).unwrap();
        let flags = m.flags.lock();
        assert_eq!(restored.series.len(), flags["f"].series.len());
        let on = &flags["f"].series.iter().find(|(v, _)| v == "on").unwrap().1[Served::Split as usize];
        assert!(on.seconds_pruned && on.minutes.len() >= 4, "the run outlasted the seconds kept");
        assert!(on.marks.len() >= 2, "windows took marks: {:?}", on.marks.len());
    }

    #[test]
    fn windows_are_differences_of_checkpoints() {
        let m = Metrics::default();
        let t0 = 10 * HOUR;
        m.record(&[obs("on", true, 10.0), obs("on", false, 20.0)], t0).unwrap();
        m.record(&[obs("on", false, 30.0)], t0 + 5 * MINUTE).unwrap();
        m.record(&[obs("off", true, 40.0)], t0 + 3 * HOUR).unwrap();
        let all = m.window("f", Some("on"), &[Served::Split], 0, None);
        assert_eq!((all.errors.n, all.errors.sum), (3, 2.0));
        let later = m.window("f", Some("on"), &[Served::Split], t0 + 2 * MINUTE, None);
        assert_eq!((later.errors.n, later.values["score"].mean()), (1, Some(3.0)));
        // To the second while the series' seconds cover the window: its end takes in the seconds that
        // ended by it.
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 6 * MINUTE)).errors.n, 3);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 4 * MINUTE)).errors.n, 2);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 1000)).errors.n, 2);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 999)).errors.n, 0);
        m.record(&[obs("on", true, 50.0)], t0 + 3 * HOUR + 1500).unwrap();
        // Further back (the seconds and, beyond two hours, the minutes are gone): a second marked while the
        // seconds covered it is still exact (t0 + 1 s), one never marked rounds inwards to the hour's
        // checkpoint (t0); after a quiet spell the seconds still know that nothing came since the last
        // second they dropped (t0 + 6 minutes).
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 6 * MINUTE)).errors.n, 3);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0 + 1000, Some(t0 + 6 * MINUTE)).errors.n, 1);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0 + 2000, Some(t0 + 6 * MINUTE)).errors.n, 0);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0, Some(t0 + 3 * HOUR)).errors.n, 3);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0 + 3 * HOUR + 1000, None).errors.n, 1);
        assert_eq!(m.window("f", Some("on"), &[Served::Split], t0 + 3 * HOUR + 2000, None).errors.n, 0);
        assert_eq!(m.window("f", None, &[Served::Split], 0, None).errors.n, 5);
    }

    /// A window measured while its seconds were kept stays exact to the second after they are gone —
    /// across a save and a restore, and for what another replica observed — instead of dropping to the
    /// next minute (a count that shrank would break a sequential test's looks).
    #[test]
    fn a_measured_window_keeps_its_start_to_the_second() {
        let t0 = 10 * HOUR;
        let traffic = |m: &Metrics, from: Millis, to: Millis| {
            for t in (from..to).step_by(500) {
                m.record(&[obs("on", t % 3000 != 0, 10.0)], t).unwrap();
            }
        };
        let (leader, other) = (Metrics::default(), Metrics::default());
        traffic(&leader, t0, t0 + 100 * SECOND);
        traffic(&other, t0, t0 + 100 * SECOND);
        let rows = |m: &Metrics| m.to_save().into_iter().map(|(f, b)| ("r2".to_string(), f, b)).collect::<Vec<_>>();
        leader.set_peers(rows(&other));
        // A phase started at t0 + 20.3 s: its window starts at t0 + 21 s.
        let start = t0 + 20_300;
        let w = leader.window("f", Some("on"), &[Served::Split], start, None);
        assert_eq!(w.errors.n, 2 * 158, "79 s of two a second, from each replica");
        traffic(&leader, t0 + 100 * SECOND, t0 + 10 * MINUTE);
        traffic(&other, t0 + 100 * SECOND, t0 + 10 * MINUTE);
        leader.set_peers(rows(&other));
        let w = leader.window("f", Some("on"), &[Served::Split], start, None);
        assert_eq!(w.errors.n, 2 * (1200 - 42), "to the second, not from t0 + 1 minute");
        assert_eq!(w.errors.sum, 2.0 * ((1200 - 42) / 6) as f64);
        // A window first measured now, from a second long gone, rounds inwards to the minute.
        let late = leader.window("f", Some("on"), &[Served::Split], t0 + 30_000, None);
        assert_eq!(late.errors.n, 2 * (1200 - 120));
        let restored = Metrics::default();
        restored.restore(leader.to_save());
        let w = restored.window("f", Some("on"), &[Served::Split], start, None);
        assert_eq!(w.errors.n, 1200 - 42, "the mark was saved with the series");
    }

    #[test]
    fn a_bad_entry_refuses_the_whole_batch() {
        let m = Metrics::default();
        let mut bad = obs("on", true, 1.0);
        bad.latency_ms = Some(f64::NAN);
        let e = m.record(&[obs("on", true, 1.0), bad], 0).unwrap_err();
        assert_eq!(e.index, Some(1));
        assert_eq!(m.observed("f"), 0, "nothing of the batch was kept");
        let many: Vec<Observation> = (0..=MAX_NAMES)
            .map(|i| Observation { values: Values(vec![(format!("v{i}").into(), 1.0)]), ..obs("on", true, 1.0) })
            .collect();
        assert!(m.record(&many, 0).unwrap_err().message.contains("value names"));
    }

    #[test]
    fn what_is_saved_restores_the_same_windows() {
        let m = Metrics::default();
        m.record(&[obs("on", true, 10.0), obs("on", false, 20.0)], 10 * HOUR).unwrap();
        let saved = m.to_save();
        assert_eq!(saved.len(), 1);
        assert!(m.to_save().is_empty(), "clean after a save");
        let restored = Metrics::default();
        restored.restore(saved);
        let w = restored.window("f", Some("on"), &[Served::Split], 0, None);
        assert_eq!((w.errors.n, w.errors.sum, w.latency.n), (2, 1.0, 2));
        assert_eq!(restored.observed("f"), 2);
    }

    /// Outcomes reported to two replicas both count in the leader's windows: its own, and what the other
    /// replica last saved; a newer save of the other replica replaces the older one (no double count).
    #[test]
    fn the_other_replicas_saved_aggregates_count_in_every_window() {
        let (leader, other) = (Metrics::default(), Metrics::default());
        leader.record(&[obs("on", true, 10.0), obs("on", false, 20.0)], 10 * HOUR).unwrap();
        other.record(&[obs("on", false, 30.0)], 10 * HOUR).unwrap();
        let rows = |m: &Metrics| m.to_save().into_iter().map(|(f, b)| ("r2".to_string(), f, b)).collect::<Vec<_>>();
        leader.set_peers(rows(&other));
        let w = leader.window("f", Some("on"), &[Served::Split], 0, None);
        assert_eq!((w.errors.n, w.errors.sum, w.latency.n), (3, 2.0, 3));
        assert_eq!(leader.observed("f"), 3);
        other.record(&[obs("on", true, 5.0)], 10 * HOUR + 1).unwrap();
        leader.set_peers(rows(&other));
        let w = leader.window("f", Some("on"), &[Served::Split], 0, None);
        assert_eq!((w.errors.n, w.errors.sum), (4, 2.0));
    }

    #[test]
    fn split_keys_count_each_key_once_per_sequence() {
        let m = Metrics::default();
        assert!(m.split_keys("f", 100).is_empty());
        m.record(&[obs("on", true, 1.0), obs("on", true, 1.0), obs("off", true, 2.0)], 150).unwrap();
        assert_eq!(m.split_keys("f", 100), BTreeMap::from([("off".into(), 1), ("on".into(), 1)]));
        // A user whose client refetched after the change moves to the variant it is served now.
        let moved = Observation { key: Some("off-2".into()), ..obs("on", true, 3.0) };
        m.record(&[moved], 160).unwrap();
        assert_eq!(m.split_keys("f", 100), BTreeMap::from([("off".into(), 0), ("on".into(), 2)]));
        assert!(m.split_keys("f", 200).is_empty(), "a new percentage starts a new count");
    }
}
