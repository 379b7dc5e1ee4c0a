//! Context for short memories. A dialogue turn, a chat message or a fact written one at a
//! time says little alone ("Yes, twice last summer!"); what came just before it in the same
//! collection usually says what it is about. A short memory is indexed with the memories
//! written just before it — by words in a field of half the weight of its own, and by
//! meaning in a second vector, of it with its context, at 0.9 the weight of its own — while
//! search still returns the memory itself.
//!
//! "Just before" is by creation time within one collection: at most [`CONTEXT_MEMORIES`]
//! memories created within [`CONTEXT_SPAN_MS`] before it (ties broken by id, which follows
//! the order of writing). Only memories that came earlier count, so adding memories at the
//! end of a conversation never changes the context of those already indexed.

use std::collections::{BTreeSet, HashMap, HashSet};

use mnemon_crdt::{MemoryId, StoreReader};

use crate::SearchError;

/// A memory shorter than this (in bytes of content) is indexed with its context.
pub const SHORT_BELOW: usize = 500;
/// How many earlier memories make a short memory's context.
pub const CONTEXT_MEMORIES: usize = 2;
/// How far back, in milliseconds, a memory still counts as context (an hour).
pub const CONTEXT_SPAN_MS: i64 = 3_600_000;
/// What a match through a short memory's context vector is worth beside one through its
/// own (its similarity is multiplied by this).
pub const CONTEXT_WEIGHT: f32 = 0.9;
/// Characters of each earlier memory taken into a context.
const CONTEXT_CHARS: usize = 400;

/// Every memory's place in time: (collection, created, id), in order.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    order: BTreeSet<(u128, i64, u128)>,
    place: HashMap<u128, (u128, i64)>,
}

impl Timeline {
    /// The timeline of every memory in `store`.
    pub(crate) fn load(store: &StoreReader) -> Result<Timeline, SearchError> {
        let mut timeline = Timeline::default();
        for (id, collection, created) in store.placements()? {
            timeline.set(id.to_u128(), collection.to_u128(), created.as_millis());
        }
        Ok(timeline)
    }

    /// Records (or moves) a memory.
    pub(crate) fn set(&mut self, id: u128, collection: u128, created: i64) {
        if let Some(old) = self.place.insert(id, (collection, created)) {
            self.order.remove(&(old.0, old.1, id));
        }
        self.order.insert((collection, created, id));
    }

    /// Forgets a memory.
    pub(crate) fn remove(&mut self, id: u128) {
        if let Some((collection, created)) = self.place.remove(&id) {
            self.order.remove(&(collection, created, id));
        }
    }

    /// The memories just before `id` in its collection, nearest first.
    pub(crate) fn before(&self, id: u128) -> Vec<u128> {
        let Some(&(collection, created)) = self.place.get(&id) else {
            return Vec::new();
        };
        self.just_before((collection, created, id), &HashSet::new())
            .map(|(_, _, earlier)| earlier)
            .collect()
    }

    /// The places just before `at` in its collection, nearest first, less those of `skip`.
    fn just_before<'a>(
        &'a self,
        at: (u128, i64, u128),
        skip: &'a HashSet<u128>,
    ) -> impl Iterator<Item = (u128, i64, u128)> + 'a {
        let (collection, created, _) = at;
        self.order
            .range(..at)
            .rev()
            .filter(|(_, _, id)| !skip.contains(id))
            .take_while(move |(c, t, _)| {
                *c == collection && created.saturating_sub(*t) <= CONTEXT_SPAN_MS
            })
            .take(CONTEXT_MEMORIES)
            .copied()
    }

    /// The memories whose context holds `id` (those just after it): they are indexed
    /// again when it changes or goes.
    pub(crate) fn after(&self, id: u128) -> Vec<u128> {
        let Some(&(collection, created)) = self.place.get(&id) else {
            return Vec::new();
        };
        self.order
            .range((collection, created, id)..)
            .skip(1)
            .take_while(|(c, t, _)| {
                *c == collection && t.saturating_sub(created) <= CONTEXT_SPAN_MS
            })
            .take(CONTEXT_MEMORIES)
            .map(|(_, _, later)| *later)
            .collect()
    }
}

/// The timeline as it will be once a batch of changes is in, read without changing it (a
/// batch is made ready while searches read the index, and put in briefly after).
#[derive(Debug)]
pub(crate) struct Patched<'a> {
    base: &'a Timeline,
    /// The batch's memories at their new places.
    patch: Timeline,
    /// Those whose place in `base` no longer holds: moved by the batch, or gone.
    moved: HashSet<u128>,
}

impl<'a> Patched<'a> {
    /// `base` with `placed` (id, collection, created) set and `removed` gone.
    pub(crate) fn new(
        base: &'a Timeline,
        placed: impl IntoIterator<Item = (u128, u128, i64)>,
        removed: impl IntoIterator<Item = u128>,
    ) -> Patched<'a> {
        let mut patch = Timeline::default();
        let mut moved: HashSet<u128> = removed.into_iter().collect();
        for (id, collection, created) in placed {
            patch.set(id, collection, created);
            moved.insert(id);
        }
        Patched { base, patch, moved }
    }

    /// [`Timeline::before`], as it will read.
    pub(crate) fn before(&self, id: u128) -> Vec<u128> {
        let place = match self.patch.place.get(&id) {
            Some(place) => place,
            None if self.moved.contains(&id) => return Vec::new(),
            None => match self.base.place.get(&id) {
                Some(place) => place,
                None => return Vec::new(),
            },
        };
        let at = (place.0, place.1, id);
        let none = HashSet::new();
        let mut near: Vec<(u128, i64, u128)> = self
            .base
            .just_before(at, &self.moved)
            .chain(self.patch.just_before(at, &none))
            .collect();
        near.sort_unstable_by(|a, b| b.cmp(a));
        near.into_iter()
            .take(CONTEXT_MEMORIES)
            .map(|(_, _, earlier)| earlier)
            .collect()
    }
}

/// A short memory's context: the memories just before it, and their texts, oldest first,
/// each cut to a few hundred characters. Empty when it has none or is not short.
#[derive(Debug, Default)]
pub(crate) struct Context {
    pub(crate) ids: Vec<u128>,
    pub(crate) text: String,
}

/// The context of a memory of `content`, of the memories just `before` it (nearest first,
/// as [`Timeline::before`] gives them). `known` holds memories already read (the batch
/// being indexed).
pub(crate) fn context_of(
    before: Vec<u128>,
    store: &StoreReader,
    content: &str,
    known: &HashMap<u128, &str>,
) -> Result<Context, SearchError> {
    if content.len() >= SHORT_BELOW {
        return Ok(Context::default());
    }
    let mut parts = Vec::new();
    let mut ids = Vec::new();
    for earlier in before.into_iter().rev() {
        let text = match known.get(&earlier) {
            Some(text) => (*text).to_owned(),
            None => match store.get(MemoryId::from_u128(earlier)) {
                Ok(memory) => memory.content,
                // Gone since: it is no context.
                Err(mnemon_crdt::StoreError::NotFound(_) | mnemon_crdt::StoreError::Deleted(_)) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
        };
        parts.push(text.chars().take(CONTEXT_CHARS).collect::<String>());
        ids.push(earlier);
    }
    Ok(Context {
        ids,
        text: parts.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_what_came_just_before_in_the_same_collection() {
        let mut t = Timeline::default();
        let hour = CONTEXT_SPAN_MS;
        t.set(1, 7, 1_000);
        t.set(2, 7, 1_000);
        t.set(3, 7, 2_000);
        t.set(4, 8, 2_500); // another collection
        t.set(5, 7, 3_000);
        t.set(6, 7, 3_000 + hour + 1); // more than an hour later
        assert_eq!(t.before(5), vec![3, 2]);
        assert_eq!(t.before(3), vec![2, 1]);
        assert_eq!(t.before(2), vec![1]);
        assert_eq!(t.before(1), Vec::<u128>::new());
        assert_eq!(t.before(4), Vec::<u128>::new());
        assert_eq!(t.before(6), Vec::<u128>::new());
        assert_eq!(t.after(1), vec![2, 3]);
        assert_eq!(t.after(3), vec![5]);
        assert_eq!(t.after(5), Vec::<u128>::new());
        t.remove(3);
        assert_eq!(t.before(5), vec![2, 1]);
        // A memory that moves in time takes its new place.
        t.set(1, 7, 2_950);
        assert_eq!(t.before(5), vec![1, 2]);
        assert_eq!(t.before(1), vec![2]);
        assert_eq!(t.after(2), vec![1, 5]);
        assert_eq!(t.before(99), Vec::<u128>::new());
        // Times far apart never overflow.
        t.set(10, 9, i64::MIN);
        t.set(11, 9, i64::MAX);
        assert_eq!(t.before(11), Vec::<u128>::new());
        assert_eq!(t.after(10), Vec::<u128>::new());
    }

    /// A timeline patched with a batch reads as the timeline with the batch applied, for
    /// every memory, over random timelines and batches (a small xorshift for the dice).
    #[test]
    fn a_patched_timeline_reads_as_the_timeline_after_its_batch() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut roll = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..300 {
            let mut base = Timeline::default();
            // Few collections and times close together, so contexts overlap and tie.
            let place = |roll: &mut dyn FnMut(u64) -> u64| {
                (roll(3) as u128, roll(6) as i64 * CONTEXT_SPAN_MS / 3)
            };
            for id in 0..roll(20) as u128 {
                let (c, t) = place(&mut roll);
                base.set(id, c, t);
            }
            let mut placed = Vec::new();
            let mut removed = Vec::new();
            for _ in 0..roll(8) {
                let id = roll(26) as u128;
                if roll(3) == 0 {
                    removed.push(id);
                } else {
                    let (c, t) = place(&mut roll);
                    placed.push((id, c, t));
                }
            }
            // A batch places what it read last; what it removed is not read again.
            placed.retain(|(id, _, _)| !removed.contains(id));
            let mut last = HashMap::new();
            for (id, c, t) in &placed {
                last.insert(*id, (*c, *t));
            }
            let placed: Vec<(u128, u128, i64)> =
                last.iter().map(|(id, (c, t))| (*id, *c, *t)).collect();
            let patched = Patched::new(&base, placed.iter().copied(), removed.iter().copied());
            let mut after = Timeline {
                order: base.order.clone(),
                place: base.place.clone(),
            };
            for id in &removed {
                after.remove(*id);
            }
            for (id, c, t) in &placed {
                after.set(*id, *c, *t);
            }
            for id in 0..26 {
                assert_eq!(patched.before(id), after.before(id), "memory {id}");
            }
        }
    }
}
