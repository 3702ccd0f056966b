//! The change log as every Watch stream of this process reads it: the most recent entries are
//! kept in memory, so that a change is read from the store once and fanned out to all the
//! streams that follow the head, not read once per stream (1,000 streams, one read).
//!
//! Only what the store returned is kept, and the log is gap-free (entry n+1 follows n), so an
//! entry served from here is exactly the entry the store would have returned. A stream that is
//! behind what is kept reads the store itself, without disturbing what is kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::store::changes::ChangeSet;
use crate::store::{Store, StoreError};

/// Most entries kept.
const MAX_ENTRIES: usize = 4096;
/// Most bytes of changes kept (encoded size): a few large policies do not pin much memory.
const MAX_BYTES: usize = 16 << 20;

pub struct ChangeFeed<S> {
    store: Arc<S>,
    recent: Mutex<Recent>,
    /// One read of the store at a time for the head: the streams woken by a new entry wait for
    /// the first one's read instead of each making its own.
    fill: tokio::sync::Mutex<()>,
}

/// A gap-free run of the log: the entries after `floor`, up to `end`.
#[derive(Default)]
struct Recent {
    /// None until the first read.
    floor: Option<u64>,
    sets: VecDeque<ChangeSet>,
    bytes: usize,
}

impl Recent {
    fn end(&self) -> Option<u64> {
        self.sets.back().map(|set| set.seq).or(self.floor)
    }

    /// The entries after `after`, when what is kept covers them and there are some.
    fn serve(&self, after: u64, limit: usize) -> Option<Vec<ChangeSet>> {
        let (floor, end) = (self.floor?, self.end()?);
        if after < floor || after >= end {
            return None;
        }
        let skip = (after - floor) as usize;
        Some(self.sets.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Appends what a read after `after` returned, if it continues what is kept.
    fn extend(&mut self, after: u64, sets: &[ChangeSet]) {
        if self.floor.is_none() {
            self.floor = Some(after);
        }
        if self.end() != Some(after) {
            return;
        }
        for set in sets {
            self.bytes += size(set);
            self.sets.push_back(set.clone());
        }
        while self.sets.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.sets.len() > 1) {
            if let Some(old) = self.sets.pop_front() {
                self.bytes -= size(&old);
                self.floor = Some(old.seq);
            }
        }
    }
}

fn size(set: &ChangeSet) -> usize {
    set.changes.iter().map(Message::encoded_len).sum::<usize>() + 64
}

impl<S: Store> ChangeFeed<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self {
            store,
            recent: Mutex::default(),
            fill: tokio::sync::Mutex::new(()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At most `limit` entries after `after`, in order: what `Store::read_changes` returns.
    pub async fn read(&self, after: u64, limit: usize) -> Result<Vec<ChangeSet>, StoreError> {
        // Nothing past the head this process knows: a stream is woken when it moves. (A
        // PostgreSQL replica learns of other replicas' writes through its change feed.)
        if after >= *self.store.subscribe().borrow() {
            return Ok(Vec::new());
        }
        if let Some(sets) = self.kept().serve(after, limit) {
            return Ok(sets);
        }
        let behind = {
            let recent = self.kept();
            recent.floor.is_some_and(|floor| after < floor)
        };
        if behind {
            return self.store.read_changes(after, limit).await;
        }
        let _filling = self.fill.lock().await;
        // Another stream may have read it while this one waited.
        if let Some(sets) = self.kept().serve(after, limit) {
            return Ok(sets);
        }
        let sets = self.store.read_changes(after, limit).await?;
        self.kept().extend(after, &sets);
        Ok(sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn set(seq: u64) -> ChangeSet {
        ChangeSet {
            seq,
            commit_time: SystemTime::UNIX_EPOCH,
            changes: Vec::new(),
        }
    }

    fn seqs(sets: Option<Vec<ChangeSet>>) -> Option<Vec<u64>> {
        sets.map(|sets| sets.iter().map(|s| s.seq).collect())
    }

    #[test]
    fn what_is_kept_is_served_exactly_and_nothing_else() {
        let mut recent = Recent::default();
        assert_eq!(seqs(recent.serve(0, 10)), None);
        recent.extend(3, &[set(4), set(5), set(6)]);
        assert_eq!(seqs(recent.serve(3, 10)), Some(vec![4, 5, 6]));
        assert_eq!(seqs(recent.serve(4, 1)), Some(vec![5]));
        assert_eq!(
            seqs(recent.serve(6, 10)),
            None,
            "at the end: read the store"
        );
        assert_eq!(seqs(recent.serve(2, 10)), None, "before what is kept");
        // A read that does not continue the run is not kept.
        recent.extend(9, &[set(10)]);
        assert_eq!(seqs(recent.serve(6, 10)), None);
        recent.extend(6, &[set(7)]);
        assert_eq!(seqs(recent.serve(5, 10)), Some(vec![6, 7]));
    }

    #[test]
    fn the_oldest_entries_go_first() {
        let mut recent = Recent::default();
        let sets: Vec<ChangeSet> = (1..=(MAX_ENTRIES as u64 + 10)).map(set).collect();
        recent.extend(0, &sets);
        assert_eq!(recent.sets.len(), MAX_ENTRIES);
        assert_eq!(recent.floor, Some(10));
        assert_eq!(seqs(recent.serve(9, 1)), None);
        assert_eq!(seqs(recent.serve(10, 1)), Some(vec![11]));
    }
}
