//! One session's retained statuses, numbered by sequence, and reading them by cursor.
//!
//! # Invariants
//!
//! - `entries` is sorted by strictly increasing `seq`, and every `seq` is at most `head`.
//! - `head` is the highest sequence number the log has ever held (0 before the first); it never
//!   decreases, not even when entries leave by count or age or the log is cleared. A reader whose
//!   cursor is below `head` is therefore owed `cursor + 1 ..= head`: each of those is either still
//!   an entry or reported to that reader as part of a gap, never skipped silently.
//! - Locally published statuses are numbered `head + 1`, so they are gap-free by construction.
//!   Statuses numbered elsewhere (a shared backend assigns them) go in with [`SessionLog::insert`]:
//!   a number above `head + 1` leaves a hole that readers report as a gap unless the missing
//!   numbers are inserted before they read past it; a number below `head` fills a hole in place
//!   if it is not already held and not older than everything retained.
//! - Entries leave only from the front (the oldest), so "first retained seq" only grows.
//! - `extras` holds the fields of the retained statuses that have any, sorted by `seq`, each
//!   `seq` that of a retained entry: it leaves with its entry. Plain statuses, the common
//!   case, so cost nothing for fields.
//! - An entry keeps its number and its age as 32-bit offsets from `base_seq` and `base_ms`
//!   (a 24-byte slot instead of 32: a tenth of what a held status costs). `base_seq` is at
//!   most every retained number and `base_ms` at most every retained age, and when a new
//!   status would not fit, the log is rebased on its oldest entry. Two cases cannot fit and
//!   give way, neither silently: entries more than `u32::MAX` numbers below a new one leave as
//!   if trimmed (readers get a gap; the next [`SessionLog::trim`] counts them), and ages more
//!   than `u32::MAX` ms (49 days) before the newest are kept as that old.
//! - The ring grows by a quarter of its length (at least [`MIN_GROWTH`] slots) when full, not
//!   by doubling: a history that stops short of its capacity (most do) leaves at most a
//!   quarter of its slots empty instead of up to half.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::Extra;
use super::{Event, Gap, HistoryExpiry, SessionId, Status};

/// The fewest slots the ring grows by.
const MIN_GROWTH: usize = 4;

/// One retained status: 24 bytes here plus the shared text allocation (a status with fields
/// also has one entry in `extras`).
#[derive(Debug)]
struct Entry {
    text: Arc<str>,
    /// Its number, less the log's `base_seq`.
    seq: u32,
    /// When it was added, in milliseconds since the hub's epoch, less the log's `base_ms`.
    age: u32,
}

/// What [`SessionLog::insert`] did with an externally numbered status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// It was the newest: appended, `head` moved to it.
    Appended,
    /// It filled a hole below `head`.
    Filled,
    /// That number is already held; the log is unchanged.
    Duplicate,
    /// It is older than everything retained (or the log is full of newer ones); not kept.
    TooOld,
}

/// The result of one [`SessionLog::read`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    /// The reader's new cursor: the last seq delivered or covered by a gap.
    pub(crate) cursor: u64,
    pub(crate) statuses: u64,
    pub(crate) gaps: u64,
    /// Statuses covered by the gaps.
    pub(crate) lagged: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    entries: VecDeque<Entry>,
    /// The fields of the entries that have any, by `seq` (see the module invariants).
    extras: VecDeque<(u64, Arc<Extra>)>,
    head: u64,
    /// When the newest status was added (`0` before the first).
    last_at_ms: u64,
    /// What the entries' `seq` and `age` are offsets from (see the module invariants).
    base_seq: u64,
    base_ms: u64,
    /// Entries that left to keep the numbers representable, not yet returned by `trim`.
    dropped: u64,
}

impl SessionLog {
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| self.seq_of(e))
    }

    fn seq_of(&self, entry: &Entry) -> u64 {
        self.base_seq + u64::from(entry.seq)
    }

    fn at_ms_of(&self, entry: &Entry) -> u64 {
        self.base_ms + u64::from(entry.age)
    }

    /// An entry for `seq` added at `at_ms`, rebasing the log first if its offsets would not fit,
    /// with room in the ring for it.
    fn entry(&mut self, seq: u64, at_ms: u64, text: Arc<str>) -> Entry {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            self.entries.reserve_exact((len / 4).max(MIN_GROWTH));
        }
        if self.entries.is_empty() {
            self.base_seq = seq;
            self.base_ms = at_ms;
        }
        let fits = |value: u64, base: u64| {
            value
                .checked_sub(base)
                .is_some_and(|offset| offset <= u64::from(u32::MAX))
        };
        if !fits(seq, self.base_seq) || !fits(at_ms, self.base_ms) {
            self.rebase(seq, at_ms);
        }
        Entry {
            text,
            seq: offset(seq, self.base_seq),
            age: offset(at_ms, self.base_ms),
        }
    }

    /// Moves the bases so that `seq` and `at_ms` fit beside what is retained (see the module
    /// invariants for what gives way when they cannot).
    #[cold]
    fn rebase(&mut self, seq: u64, at_ms: u64) {
        let span = u64::from(u32::MAX);
        while let Some(front) = self.entries.front() {
            if seq.saturating_sub(self.seq_of(front)) <= span {
                break;
            }
            self.entries.pop_front();
            self.dropped += 1;
        }
        let first = self.entries.front().map_or(seq, |e| self.seq_of(e));
        while self.extras.front().is_some_and(|(held, _)| *held < first) {
            self.extras.pop_front();
        }
        let (mut oldest, mut newest) = (at_ms, at_ms);
        for entry in &self.entries {
            let at = self.at_ms_of(entry);
            oldest = oldest.min(at);
            newest = newest.max(at);
        }
        let base_seq = first.min(seq);
        let base_ms = oldest.max(newest.saturating_sub(span));
        let (old_seq, old_ms) = (self.base_seq, self.base_ms);
        for entry in &mut self.entries {
            entry.seq = offset(old_seq + u64::from(entry.seq), base_seq);
            entry.age = offset(old_ms + u64::from(entry.age), base_ms);
        }
        self.base_seq = base_seq;
        self.base_ms = base_ms;
    }

    /// Appends a locally published status as `head + 1` and returns its number.
    pub(crate) fn append(&mut self, text: Arc<str>, extra: Option<Arc<Extra>>, now_ms: u64) -> u64 {
        self.head += 1;
        let entry = self.entry(self.head, now_ms, text);
        self.entries.push_back(entry);
        if let Some(extra) = extra {
            self.extras.push_back((self.head, extra));
        }
        self.last_at_ms = now_ms;
        self.head
    }

    /// Inserts a status numbered elsewhere (see the module invariants); `seq` must be at least 1.
    pub(crate) fn insert(
        &mut self,
        seq: u64,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        now_ms: u64,
        capacity: usize,
    ) -> Inserted {
        if seq == 0 {
            return Inserted::TooOld;
        }
        if seq > self.head {
            self.head = seq;
            self.last_at_ms = now_ms;
            let entry = self.entry(seq, now_ms, text);
            self.entries.push_back(entry);
            if let Some(extra) = extra {
                self.extras.push_back((seq, extra));
            }
            return Inserted::Appended;
        }
        let at = self.entries.partition_point(|e| self.seq_of(e) < seq);
        if self.entries.get(at).is_some_and(|e| self.seq_of(e) == seq) {
            return Inserted::Duplicate;
        }
        let newest = self.entries.back().map_or(seq, |e| self.seq_of(e));
        if at == 0 && (self.entries.len() >= capacity || newest - seq > u64::from(u32::MAX)) {
            return Inserted::TooOld;
        }
        // A filled hole keeps the age of its neighbour so it leaves history with it.
        let at_ms = self.entries.get(at).map_or(now_ms, |e| self.at_ms_of(e));
        let entry = self.entry(seq, at_ms, text);
        // A rebase may have moved the entries, so the place is found again.
        let at = self.entries.partition_point(|e| self.seq_of(e) < seq);
        self.entries.insert(at, entry);
        if let Some(extra) = extra {
            let at = self.extras.partition_point(|(held, _)| *held < seq);
            self.extras.insert(at, (seq, extra));
        }
        Inserted::Filled
    }

    /// Records that numbers up to `seq` were given elsewhere: those not held are lost, and
    /// readers report them as a gap.
    pub(crate) fn skip_to(&mut self, seq: u64) {
        self.head = self.head.max(seq);
    }

    /// Removes what the bounds no longer allow; returns how many entries left.
    pub(crate) fn trim(
        &mut self,
        capacity: usize,
        expiry: HistoryExpiry,
        ttl_ms: u64,
        now_ms: u64,
    ) -> u64 {
        let mut removed = std::mem::take(&mut self.dropped);
        while self.entries.len() > capacity {
            self.entries.pop_front();
            removed += 1;
        }
        match expiry {
            HistoryExpiry::EachStatus => {
                while self
                    .entries
                    .front()
                    .is_some_and(|e| now_ms.saturating_sub(self.at_ms_of(e)) >= ttl_ms)
                {
                    self.entries.pop_front();
                    removed += 1;
                }
            }
            HistoryExpiry::AfterLastStatus => {
                if !self.entries.is_empty() && now_ms.saturating_sub(self.last_at_ms) >= ttl_ms {
                    removed += self.clear();
                }
            }
        }
        if removed > 0 {
            let first = self.entries.front().map_or(u64::MAX, |e| self.seq_of(e));
            while self.extras.front().is_some_and(|(seq, _)| *seq < first) {
                self.extras.pop_front();
            }
        }
        removed
    }

    /// Drops every entry (keeping `head`); returns how many left.
    pub(crate) fn clear(&mut self) -> u64 {
        let removed = self.entries.len() as u64 + std::mem::take(&mut self.dropped);
        self.entries = VecDeque::new();
        self.extras = VecDeque::new();
        removed
    }

    /// The index of the first entry numbered above `cursor`.
    fn index_after(&self, cursor: u64) -> usize {
        let len = self.entries.len();
        match (self.entries.front(), self.entries.back()) {
            // Contiguous numbers (always so for locally published statuses): no search, which
            // would touch a cold cache line per probe.
            (Some(first), Some(last)) if u64::from(last.seq - first.seq) + 1 == len as u64 => {
                let offset = cursor.saturating_add(1).saturating_sub(self.seq_of(first));
                usize::try_from(offset).map_or(len, |offset| offset.min(len))
            }
            _ => self.entries.partition_point(|e| self.seq_of(e) <= cursor),
        }
    }

    /// Reads what follows `cursor` into `out`: at most `max_statuses` statuses, each preceded by a
    /// gap where numbers are missing. A reader more than `max_behind` statuses behind `head` is
    /// first moved forward with one gap, so it never has more than `max_behind` to catch up on.
    pub(crate) fn read(
        &self,
        mut cursor: u64,
        max_behind: u64,
        max_statuses: usize,
        session: &SessionId,
        out: &mut VecDeque<Event>,
    ) -> Read {
        let mut read = Read::default();
        // Adjacent missing ranges (too far behind, then out of history) make one gap.
        let mut gap_from = None;
        let mut flush_gap = |out: &mut VecDeque<Event>, gap_from: &mut Option<u64>, to: u64| {
            if let Some(from) = gap_from.take() {
                read.gaps += 1;
                read.lagged += to - from + 1;
                out.push_back(Event::Gap(Gap::new(session.clone(), from, to)));
            }
        };
        let floor = self.head.saturating_sub(max_behind);
        if floor > cursor {
            gap_from = Some(cursor + 1);
            cursor = floor;
        }
        let mut at = self.index_after(cursor);
        let mut extra_at = self.extras.partition_point(|(seq, _)| *seq <= cursor);
        let mut statuses = 0;
        while statuses < max_statuses {
            let Some(entry) = self.entries.get(at) else {
                break;
            };
            let seq = self.seq_of(entry);
            if seq > cursor + 1 {
                gap_from.get_or_insert(cursor + 1);
                cursor = seq - 1;
            }
            flush_gap(out, &mut gap_from, cursor);
            while self
                .extras
                .get(extra_at)
                .is_some_and(|(held, _)| *held < seq)
            {
                extra_at += 1;
            }
            let extra = match self.extras.get(extra_at) {
                Some((held, extra)) if *held == seq => Some(Arc::clone(extra)),
                _ => None,
            };
            out.push_back(Event::Status(Status::new(
                session.clone(),
                seq,
                Arc::clone(&entry.text),
                extra,
            )));
            cursor = seq;
            statuses += 1;
            at += 1;
        }
        if at >= self.entries.len() && cursor < self.head {
            // Everything up to `head` left history before this reader got to it.
            gap_from.get_or_insert(cursor + 1);
            cursor = self.head;
        }
        flush_gap(out, &mut gap_from, cursor);
        read.cursor = cursor;
        read.statuses = statuses as u64;
        read
    }
}

/// `value - base` as an entry keeps it: the callers have made it fit, and anything else is
/// clamped rather than wrapped.
fn offset(value: u64, base: u64) -> u32 {
    u32::try_from(value.saturating_sub(base)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
