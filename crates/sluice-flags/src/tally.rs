//! Counting evaluations without slowing them down.
//!
//! Every OFREP answer is counted by flag and variant for `/metrics`. The count sits on the hot path of
//! every request, so it must cost a few nanoseconds and never make two cores fight over one cache line:
//! a shared atomic counter bumped by every request of a bulk evaluation of 350 flags would cost more than
//! the evaluation itself. A [`Tally`] therefore gives each thread its own row of counters, which only that
//! thread writes (a plain load and store, no locked instruction) and a reader sums at scrape time.
//! [`Evaluations`] numbers each (flag, variant) pair once, for good, so that counts carry over from one
//! snapshot to the next and never go backwards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// Slots per lazily allocated chunk of a thread's row.
const CHUNK: usize = 512;
/// Chunks per row: a tally has at most `CHUNK * CHUNKS` slots (65,536).
const CHUNKS: usize = 128;

/// The most slots a [`Tally`] has; adding to a slot beyond it does nothing.
pub const MAX_SLOTS: u32 = (CHUNK * CHUNKS) as u32;

/// One thread's row of counters; only that thread writes it.
struct Row {
    chunks: [OnceLock<Box<[AtomicU64]>>; CHUNKS],
}

impl Row {
    fn new() -> Row {
        Row { chunks: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn get(&self, slot: u32) -> u64 {
        let (chunk, at) = (slot as usize / CHUNK, slot as usize % CHUNK);
        self.chunks.get(chunk).and_then(OnceLock::get).map_or(0, |c| c[at].load(Ordering::Relaxed))
    }
}

/// Tells tallies apart in a thread's list (an address could be reused after a tally is dropped).
static NEXT_TALLY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's row in each tally it has added to.
    static ROWS: RefCell<Vec<(u64, Arc<Row>)>> = const { RefCell::new(Vec::new()) };
}

/// Numbered counters that many threads add to without contention, summed when read.
///
/// ```
/// use sluice_flags::tally::Tally;
/// let tally = Tally::new();
/// tally.with(|hand| {
///     hand.add(3, 1);
///     hand.add(3, 2);
/// });
/// std::thread::scope(|s| {
///     s.spawn(|| tally.with(|hand| hand.add(3, 10)));
/// });
/// assert_eq!(tally.sum(3), 13);
/// assert_eq!(tally.sum(4), 0);
/// ```
#[derive(Clone)]
pub struct Tally {
    inner: Arc<TallyInner>,
}

struct TallyInner {
    id: u64,
    rows: Mutex<Vec<Arc<Row>>>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("threads", &self.inner.rows.lock().len()).finish()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            inner: Arc::new(TallyInner {
                id: NEXT_TALLY.fetch_add(1, Ordering::Relaxed),
                rows: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f` with this thread's hand on the tally. The hand cannot leave the closure or the thread, so
    /// no other thread ever writes the same row.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&Hand<'_>) -> R) -> R {
        // The row is taken out of the thread's list before `f` runs: `f` may add to another tally, which
        // may register a row of its own in the same list.
        let row = ROWS.with(|rows| {
            if let Some((_, row)) = rows.borrow().iter().find(|(id, _)| *id == self.inner.id) {
                return row.clone();
            }
            let row = Arc::new(Row::new());
            self.inner.rows.lock().push(row.clone());
            rows.borrow_mut().push((self.inner.id, row.clone()));
            row
        });
        f(&Hand { row: &row, _not_send: PhantomData })
    }

    /// The total of one slot over every thread.
    pub fn sum(&self, slot: u32) -> u64 {
        let rows = self.inner.rows.lock();
        rows.iter().map(|r| r.get(slot)).sum()
    }
}

/// One thread's hand on a [`Tally`], inside [`Tally::with`].
pub struct Hand<'a> {
    row: &'a Row,
    /// A hand is its thread's alone: the row's counters are written without a locked instruction.
    _not_send: PhantomData<*const ()>,
}

impl Hand<'_> {
    /// Adds `n` to `slot` (nothing when `slot` is [`MAX_SLOTS`] or more).
    #[inline]
    pub fn add(&self, slot: u32, n: u64) {
        let (chunk, at) = (slot as usize / CHUNK, slot as usize % CHUNK);
        let Some(cell) = self.row.chunks.get(chunk) else { return };
        let counters = cell.get_or_init(|| (0..CHUNK).map(|_| AtomicU64::new(0)).collect());
        let c = &counters[at];
        // Only this thread writes this counter, so a load and a store cannot lose an update.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// What a count is of: a variant served, or an answer that named no variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Served {
    /// The flag answered with this variant.
    Variant(Box<str>),
    /// The flag splits by a key the context lacked (`TARGETING_KEY_MISSING`).
    TargetingKeyMissing,
}

/// Evaluation counts by flag and what was served, carried over from snapshot to snapshot.
///
/// ```
/// use sluice_flags::tally::{Evaluations, Served};
/// use sluice_flags::{Context, Flag, LiveFlags, Snapshot};
/// let mut flag = Flag::boolean("beta");
/// flag.ramp.percent = 100;
/// let live = LiveFlags::new(Snapshot::from_flags(vec![flag], vec![]).unwrap());
/// live.load().evaluate_ofrep("beta", &Context::new().user_id("u1"));
/// live.load().evaluate_ofrep("beta", &Context::new().user_id("u2"));
/// let counts = live.evaluations().counts();
/// assert!(counts.contains(&("beta".into(), Served::Variant("on".into()), 2)));
/// ```
#[derive(Clone, Default, Debug)]
pub struct Evaluations {
    tally: Tally,
    pairs: Arc<Mutex<Pairs>>,
}

#[derive(Default, Debug)]
struct Pairs {
    slots: HashMap<(Box<str>, Served), u32>,
    names: Vec<(Box<str>, Served)>,
}

impl Evaluations {
    /// The slot of (`flag`, `served`), numbered on first sight; `None` once [`MAX_SLOTS`] pairs exist.
    pub(crate) fn slot(&self, flag: &str, served: Served) -> Option<u32> {
        let mut pairs = self.pairs.lock();
        let key = (Box::from(flag), served);
        if let Some(&slot) = pairs.slots.get(&key) {
            return Some(slot);
        }
        let slot = u32::try_from(pairs.names.len()).ok().filter(|&s| s < MAX_SLOTS)?;
        pairs.names.push(key.clone());
        pairs.slots.insert(key, slot);
        Some(slot)
    }

    pub(crate) fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Every (flag, served, count) counted so far, in the order the pairs were first seen. Flags since
    /// deleted are included; callers filter by the current snapshot.
    pub fn counts(&self) -> Vec<(Box<str>, Served, u64)> {
        let names = self.pairs.lock().names.clone();
        let rows = self.tally.inner.rows.lock();
        names
            .into_iter()
            .enumerate()
            .map(|(slot, (flag, served))| {
                let n = rows.iter().map(|r| r.get(slot as u32)).sum();
                (flag, served, n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_to_their_own_rows_and_the_sum_sees_them_all() {
        let tally = Tally::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        tally.with(|h| {
                            h.add(0, 1);
                            h.add(700, 2);
                        });
                    }
                });
            }
        });
        assert_eq!(tally.sum(0), 40_000);
        assert_eq!(tally.sum(700), 80_000);
        assert_eq!(tally.inner.rows.lock().len(), 4);
    }

    #[test]
    fn a_slot_past_the_last_is_ignored_and_two_tallies_stay_apart() {
        let (a, b) = (Tally::new(), Tally::new());
        a.with(|h| h.add(MAX_SLOTS, 1));
        a.with(|h| h.add(MAX_SLOTS - 1, 1));
        b.with(|h| h.add(1, 5));
        assert_eq!(a.sum(MAX_SLOTS), 0);
        assert_eq!(a.sum(MAX_SLOTS - 1), 1);
        assert_eq!(a.sum(1), 0);
        assert_eq!(b.sum(1), 5);
    }

    #[test]
    fn a_hand_may_add_to_another_tally_inside_its_closure() {
        let (a, b) = (Tally::new(), Tally::new());
        a.with(|ha| {
            ha.add(0, 1);
            b.with(|hb| hb.add(0, 2));
            ha.add(0, 1);
        });
        assert_eq!((a.sum(0), b.sum(0)), (2, 2));
    }

    #[test]
    fn a_pair_keeps_its_slot() {
        let e = Evaluations::default();
        let a = e.slot("f", Served::Variant("on".into()));
        let b = e.slot("f", Served::TargetingKeyMissing);
        assert_ne!(a, b);
        assert_eq!(e.slot("f", Served::Variant("on".into())), a);
    }
}
