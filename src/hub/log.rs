//! One session's retained statuses, numbered by sequence, and reading them by cursor.
//!
//! # Invariants
//!
//! - The entries, `entries` (the cold ones) then `hot`, are sorted by strictly increasing
//!   `seq`, and every `seq` is at most `head`.
//! - `head` is the highest sequence number the log has ever held (0 before the first); it never
//!   decreases, not even when entries leave by count or age or the log is cleared. A reader whose
//!   cursor is below `head` is therefore owed `cursor + 1 ..= head`: each of those is either still
//!   an entry or reported to that reader as part of a gap, never skipped silently.
//! - Locally published statuses are numbered `head + 1`, so they are gap-free by construction.
//!   Statuses numbered elsewhere (a shared backend assigns them) go in with [`SessionLog::insert`]:
//!   a number above `head + 1` leaves a hole that readers report as a gap unless the missing
//!   numbers are inserted before they read past it; a number below `head` fills a hole in place
//!   if it is not already held and not older than everything retained (nor, among the cold
//!   entries, one that would take `bytes` past `u32::MAX` bytes: then it is not kept either).
//! - Entries leave only from the front (the oldest), so "first retained seq" only grows.
//! - When `holes` is false, the entries are numbered `head - len + 1 ..= head`, one by one
//!   (locally published statuses always are). It may be true of entries that have none: it is
//!   cleared when an entry comes to an empty log and rechecked when a trim removes entries.
//! - An entry is hot or cold. The hot ones, in `hot`, are the newest, and each holds the text
//!   and fields it was published with: a reader gets those shared allocations, a reference
//!   count each. The cold ones, in `entries`, are the rest, and each keeps its text and fields
//!   as one record in `bytes`, in entry order: a record ends at its entry's `end` and starts
//!   where the one before it ends (the first at `bytes_front`). Reading a cold entry makes a
//!   new `Arc<str>` (and fields) for that reader, so history nobody reads costs no allocation
//!   per status.
//! - After [`SessionLog::append`] or [`SessionLog::insert`], `hot` has at most the window the
//!   caller passed ([`hot_window`]: what a subscriber can still read while the session has
//!   any, none while it has none), and after [`SessionLog::cool_all`] (called when a session's
//!   last subscriber leaves) none, unless cooling one more would take `bytes` past `u32::MAX`
//!   bytes. Entries cool oldest first, and `hot` gives back room it no longer needs.
//! - A record is a tag byte ([`HAS_FIELDS`], [`HAS_PROGRESS`], [`HAS_TASK`], [`FIELDS_ASIDE`]),
//!   the progress as two LEB128 numbers if it has one, its task's index if it has one, then the
//!   text's UTF-8 bytes. `bytes` holds at most `u32::MAX` bytes, so positions, kept as `u32`,
//!   are told apart by wrapping differences from `bytes_front`.
//! - `tasks` holds the task ids the cold records name, oldest first, one per run of records of
//!   the same task, each with the highest `seq` naming it (nondecreasing along `tasks`); a
//!   record names one by its index counted since the log began (`tasks_base` is that of the
//!   front). An id leaves once no retained entry is numbered up to its `seq`, so a task's id
//!   is held once per run of its statuses, not once per status.
//! - `extras` holds the fields of the cold entries whose record does not carry them (a level,
//!   key or data, or a hole filled among cold entries), sorted by `seq`, each `seq` that of a
//!   retained entry: it leaves with its entry.
//! - An entry keeps its number and its age as 32-bit offsets from `base_seq` and `base_ms`
//!   (with `end`, a 12-byte slot; 32 bytes with the shared text and fields of a hot one). `base_seq` is at most every retained number and `base_ms`
//!   at most every retained age, and when a new status would not fit, the log is rebased on
//!   its oldest entry. Two cases cannot fit and give way, neither silently: entries more than
//!   `u32::MAX` numbers below a new one leave as if trimmed (readers get a gap; the next
//!   [`SessionLog::trim`] counts them), and ages more than `u32::MAX` ms (49 days) before the
//!   newest are kept as that old.
//! - The rings of held history (`entries`, `bytes`) grow by a quarter of their length (at least
//!   [`MIN_GROWTH`] slots, [`MIN_BYTES_GROWTH`] bytes) when full, not by doubling: a history
//!   that stops short of its capacity (most do) leaves at most a quarter of its room empty
//!   instead of up to half. `hot` doubles (at least [`MIN_HOT_GROWTH`] slots), never past the
//!   window it was given: it fills while subscribers read, each slot beside a text that costs
//!   more than the slot, and growing by a quarter would copy the ring about four times over
//!   on the way to its window, on the path of every status; it gives its room back when its
//!   subscribers leave ([`SessionLog::cool_all`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::event::Extra;
use super::{Event, Gap, HistoryExpiry, SessionId, Status};
use crate::status::Progress;

/// The fewest slots the ring of entries grows by.
const MIN_GROWTH: usize = 4;
/// The fewest slots the ring of hot statuses grows by: a session that has them has a
/// subscriber reading, and its statuses come in bursts (512 bytes).
const MIN_HOT_GROWTH: usize = 16;
/// The fewest bytes the ring of records grows by.
const MIN_BYTES_GROWTH: usize = 64;

/// Record tag: the status has fields (perhaps none of them set).
const HAS_FIELDS: u8 = 1;
/// Record tag: a progress follows.
const HAS_PROGRESS: u8 = 2;
/// Record tag: a task's index follows.
const HAS_TASK: u8 = 4;
/// Record tag: the fields are in `extras`.
const FIELDS_ASIDE: u8 = 8;
/// The longest record header: the tag and three LEB128 numbers of at most 10 bytes.
const MAX_HEADER: usize = 31;

/// How many of a session's newest statuses stay hot (see the module invariants). While the
/// session has subscribers, every one a subscriber may still read (`subscriber_buffer`; no
/// reader is further behind), so that delivering one is a reference count per subscriber, and
/// one more: an append at capacity adds its status before the trim takes the oldest, which
/// would otherwise be cooled only to leave. While it has none, none, so that held history
/// costs its bytes and not an allocation each; a subscriber that comes later reads what it
/// missed from the records.
pub(crate) fn hot_window(subscribers: usize, subscriber_buffer: usize) -> usize {
    if subscribers > 0 {
        subscriber_buffer.saturating_add(1)
    } else {
        0
    }
}

/// What a log may hold: how many statuses, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) capacity: usize,
    pub(crate) expiry: HistoryExpiry,
    pub(crate) ttl_ms: u64,
}

/// One cold status: 12 bytes here, and its record in `bytes`.
#[derive(Debug)]
struct Entry {
    /// Its number, less the log's `base_seq`.
    seq: u32,
    /// When it was added, in milliseconds since the hub's epoch, less the log's `base_ms`.
    age: u32,
    /// Where its record ends in `bytes`.
    end: u32,
}

/// One hot status: its number and age as an [`Entry`] keeps them, and the text and fields it
/// was published with (32 bytes, one ring slot).
#[derive(Debug)]
struct Hot {
    text: Arc<str>,
    extra: Option<Arc<Extra>>,
    seq: u32,
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

/// Laid out in the order a status uses it (`repr(C)`): what appending to and reading a session
/// with subscribers touches (the hot ring, the length of the cold one, the numbers and ages)
/// comes first, in 112 bytes, and what only cold history uses after it, so that publishing to
/// one of many sessions, whose state is rarely still in cache, touches the fewest lines it can.
#[derive(Default)]
#[repr(C)]
pub(crate) struct SessionLog {
    /// The hot entries, the newest, after the cold ones.
    hot: VecDeque<Hot>,
    /// The cold entries, oldest first (see the module invariants).
    entries: VecDeque<Entry>,
    head: u64,
    /// What the entries' `seq` and `age` are offsets from (see the module invariants).
    base_seq: u64,
    base_ms: u64,
    /// When the newest status was added (`0` before the first).
    last_at_ms: u64,
    /// Entries that left to keep the numbers representable, not yet returned by `trim`.
    dropped: u64,
    /// The position of `bytes[0]`.
    bytes_front: u32,
    /// Whether the entries' numbers may skip some: `false` says they run on one by one up to
    /// `head`, so a reader finds its place without looking at any entry (the oldest is rarely
    /// still in cache).
    holes: bool,
    /// The fields of the cold entries whose records do not carry them, by `seq`.
    extras: VecDeque<(u64, Arc<Extra>)>,
    /// The task ids the records name, each with the last `seq` naming it.
    tasks: VecDeque<(u64, Arc<str>)>,
    /// The index of `tasks[0]`.
    tasks_base: u64,
    /// The records of the cold entries, oldest first.
    bytes: VecDeque<u8>,
}

impl fmt::Debug for SessionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLog")
            .field("head", &self.head)
            .field("entries", &self.entries.len())
            .field("hot", &self.hot.len())
            .field("bytes", &self.bytes.len())
            .field("tasks", &self.tasks.len())
            .field("extras", &self.extras.len())
            .finish_non_exhaustive()
    }
}

/// Makes room in `ring` for `additional` more items, growing by a quarter (at least `min`).
fn grow<T>(ring: &mut VecDeque<T>, additional: usize, min: usize) {
    let len = ring.len();
    if ring.capacity() - len < additional {
        ring.reserve_exact((len / 4).max(min).max(additional));
    }
}

/// Makes room in `hot` for one more, doubling it (at least [`MIN_HOT_GROWTH`] slots) but not
/// past `window` slots (see the module invariants).
fn grow_hot(hot: &mut VecDeque<Hot>, window: usize) {
    let len = hot.len();
    if hot.capacity() == len {
        let room = window.saturating_sub(len).max(1);
        hot.reserve_exact(len.max(MIN_HOT_GROWTH).min(room));
    }
}

/// Appends `value` to `out` as LEB128.
fn put_number(out: &mut [u8; MAX_HEADER], at: &mut usize, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if let Some(slot) = out.get_mut(*at) {
            *slot = if value == 0 { low } else { low | 0x80 };
        }
        *at += 1;
        if value == 0 {
            break;
        }
    }
}

/// Reads a LEB128 number written by [`put_number`] from `bytes[*at..end]`, moving `at` past it.
fn take_number(bytes: &VecDeque<u8>, at: &mut usize, end: usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0u32;
    while *at < end {
        let Some(&byte) = bytes.get(*at) else {
            break;
        };
        *at += 1;
        if shift < u64::BITS {
            value |= u64::from(byte & 0x7f) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// `ring[from..to]` as its two slices (the second empty unless the range wraps).
fn slices(ring: &VecDeque<u8>, from: usize, to: usize) -> (&[u8], &[u8]) {
    let (first, second) = ring.as_slices();
    let split = first.len();
    if to <= split {
        (first.get(from..to).unwrap_or_default(), &[])
    } else if from >= split {
        (
            second.get(from - split..to - split).unwrap_or_default(),
            &[],
        )
    } else {
        (
            first.get(from..).unwrap_or_default(),
            second.get(..to - split).unwrap_or_default(),
        )
    }
}

impl SessionLog {
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.hot.len()
    }

    #[cfg(test)]
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.seq_at(0)
    }

    fn seq_of(&self, entry: &Entry) -> u64 {
        self.base_seq + u64::from(entry.seq)
    }

    /// The number and age offsets of the entry at `at`, counting cold then hot.
    fn offsets_at(&self, at: usize) -> Option<(u32, u32)> {
        match self.entries.get(at) {
            Some(entry) => Some((entry.seq, entry.age)),
            None => self
                .hot
                .get(at - self.entries.len())
                .map(|hot| (hot.seq, hot.age)),
        }
    }

    /// The number of the entry at `at`.
    fn seq_at(&self, at: usize) -> Option<u64> {
        self.offsets_at(at)
            .map(|(seq, _)| self.base_seq + u64::from(seq))
    }

    /// When the entry at `at` was added.
    fn at_ms_at(&self, at: usize) -> Option<u64> {
        self.offsets_at(at)
            .map(|(_, age)| self.base_ms + u64::from(age))
    }

    /// The number of the newest entry.
    fn back_seq(&self) -> Option<u64> {
        self.len().checked_sub(1).and_then(|at| self.seq_at(at))
    }

    /// The index of the first entry whose number is not `below`, counting cold then hot.
    fn partition(&self, below: impl Fn(u64) -> bool) -> usize {
        let cold = self.entries.partition_point(|e| below(self.seq_of(e)));
        if cold < self.entries.len() {
            return cold;
        }
        cold + self
            .hot
            .partition_point(|h| below(self.base_seq + u64::from(h.seq)))
    }

    /// How many entries are cold: the first ones.
    fn cold_len(&self) -> usize {
        self.entries.len()
    }

    /// The position just past the last record.
    fn bytes_end(&self) -> u32 {
        self.bytes_front.wrapping_add(self.bytes.len() as u32)
    }

    /// Whether `more` bytes of records still keep `bytes` within `u32::MAX`.
    fn bytes_fit(&self, more: usize) -> bool {
        self.bytes
            .len()
            .checked_add(more)
            .is_some_and(|len| len <= u32::MAX as usize)
    }

    /// The offsets of an entry for `seq` added at `at_ms`, rebasing the log first if they would
    /// not fit.
    fn offsets(&mut self, seq: u64, at_ms: u64) -> (u32, u32) {
        if self.len() == 0 {
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
        (offset(seq, self.base_seq), offset(at_ms, self.base_ms))
    }

    /// Moves the bases so that `seq` and `at_ms` fit beside what is retained (see the module
    /// invariants for what gives way when they cannot).
    #[cold]
    fn rebase(&mut self, seq: u64, at_ms: u64) {
        let span = u64::from(u32::MAX);
        while let Some(front) = self.seq_at(0) {
            if seq.saturating_sub(front) <= span {
                break;
            }
            self.pop_front();
            self.dropped += 1;
        }
        let first = self.seq_at(0).unwrap_or(seq);
        self.forget_before(first);
        let (mut oldest, mut newest) = (at_ms, at_ms);
        let ages = self.entries.iter().map(|e| e.age);
        for age in ages.chain(self.hot.iter().map(|h| h.age)) {
            let at = self.base_ms + u64::from(age);
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
        for hot in &mut self.hot {
            hot.seq = offset(old_seq + u64::from(hot.seq), base_seq);
            hot.age = offset(old_ms + u64::from(hot.age), base_ms);
        }
        self.base_seq = base_seq;
        self.base_ms = base_ms;
    }

    /// Removes the oldest entry with its text and fields, leaving `extras` and `tasks` to
    /// [`forget_before`](Self::forget_before).
    fn pop_front(&mut self) {
        match self.entries.pop_front() {
            Some(entry) => {
                let len = entry.end.wrapping_sub(self.bytes_front) as usize;
                self.bytes.drain(..len.min(self.bytes.len()));
                self.bytes_front = entry.end;
            }
            None => {
                self.hot.pop_front();
            }
        }
    }

    /// Drops the fields and task ids of entries numbered below `first`, which have left.
    fn forget_before(&mut self, first: u64) {
        while self.extras.front().is_some_and(|(seq, _)| *seq < first) {
            self.extras.pop_front();
        }
        while self.tasks.front().is_some_and(|(last, _)| *last < first) {
            self.tasks.pop_front();
            self.tasks_base += 1;
        }
    }

    /// The index of `task` for a record numbered `seq`, newer than every record so far: the
    /// newest id's if it is the same task, else a new one's.
    fn task_index(&mut self, seq: u64, task: &Arc<str>) -> u64 {
        match self.tasks.back_mut() {
            Some((last, id)) if **id == **task => *last = seq,
            _ => {
                grow(&mut self.tasks, 1, 1);
                self.tasks.push_back((seq, Arc::clone(task)));
            }
        }
        self.tasks_base + self.tasks.len() as u64 - 1
    }

    /// The record header of a status numbered `seq`, newer than every record so far, and
    /// where its fields go if the header cannot carry them.
    fn header(&mut self, seq: u64, extra: Option<&Arc<Extra>>) -> ([u8; MAX_HEADER], usize) {
        let mut header = [0; MAX_HEADER];
        let mut len = 1;
        let mut tag = 0;
        if let Some(extra) = extra {
            tag |= HAS_FIELDS;
            if extra.has_rare() {
                tag |= FIELDS_ASIDE;
                grow(&mut self.extras, 1, 1);
                self.extras.push_back((seq, Arc::clone(extra)));
            } else {
                if let Some(progress) = extra.progress {
                    tag |= HAS_PROGRESS;
                    put_number(&mut header, &mut len, progress.current());
                    put_number(&mut header, &mut len, progress.total());
                }
                if let Some(task) = &extra.task {
                    tag |= HAS_TASK;
                    let index = self.task_index(seq, task);
                    put_number(&mut header, &mut len, index);
                }
            }
        }
        header[0] = tag;
        (header, len)
    }

    /// Writes the record of a status numbered `seq`, newer than every record so far, at the
    /// end of `bytes`; returns where it ends, or `None` (nothing changed) if it does not fit.
    fn push_record(&mut self, seq: u64, text: &str, extra: Option<&Arc<Extra>>) -> Option<u32> {
        if !self.bytes_fit(MAX_HEADER + text.len()) {
            return None;
        }
        let (header, len) = self.header(seq, extra);
        grow(&mut self.bytes, len + text.len(), MIN_BYTES_GROWTH);
        self.bytes.extend(&header[..len]);
        self.bytes.extend(text.as_bytes());
        Some(self.bytes_end())
    }

    /// Cools every hot entry, for a session whose last subscriber left: its history then costs
    /// its records, not an allocation per status, without waiting for its next status (which
    /// may never come, the task having ended).
    pub(crate) fn cool_all(&mut self) {
        self.cool(0);
    }

    /// Cools the oldest hot entries until at most `window` are hot (see the module invariants).
    fn cool(&mut self, window: usize) {
        let mut cooled = false;
        while self.hot.len() > window {
            let Some(hot) = self.hot.pop_front() else {
                break;
            };
            let seq = self.base_seq + u64::from(hot.seq);
            let Some(end) = self.push_record(seq, &hot.text, hot.extra.as_ref()) else {
                // No room in `bytes`: it stays hot until older records leave.
                self.hot.push_front(hot);
                break;
            };
            grow(&mut self.entries, 1, MIN_GROWTH);
            self.entries.push_back(Entry {
                seq: hot.seq,
                age: hot.age,
                end,
            });
            cooled = true;
        }
        // Room a burst or a subscriber needed goes back once they are gone.
        if cooled && self.hot.capacity() > 2 * self.hot.len() + MIN_HOT_GROWTH {
            self.hot.shrink_to(self.hot.len());
        }
    }

    /// Keeps `holes` for a new entry numbered `seq`, the new `head` (called before `head`
    /// moves to it).
    fn note_newest(&mut self, seq: u64) {
        if self.len() == 0 {
            self.holes = false;
        } else if self.head.checked_add(1) != Some(seq) {
            self.holes = true;
        }
    }

    /// Whether the entries are numbered one by one up to `head` (reads the oldest and the
    /// newest).
    fn numbers_run_on(&self) -> bool {
        match (self.seq_at(0), self.back_seq()) {
            (Some(first), Some(last)) => last == self.head && last - first + 1 == self.len() as u64,
            _ => true,
        }
    }

    /// Adds the newest entry, hot or (with a window of none) straight into a record.
    fn push_newest(
        &mut self,
        seq: u64,
        at_ms: u64,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        window: usize,
    ) {
        let (seq_offset, age) = self.offsets(seq, at_ms);
        if window == 0 && self.hot.is_empty() {
            if let Some(end) = self.push_record(seq, &text, extra.as_ref()) {
                grow(&mut self.entries, 1, MIN_GROWTH);
                self.entries.push_back(Entry {
                    seq: seq_offset,
                    age,
                    end,
                });
                return;
            }
        }
        grow_hot(&mut self.hot, window);
        self.hot.push_back(Hot {
            text,
            extra,
            seq: seq_offset,
            age,
        });
        self.cool(window);
    }

    /// Appends a locally published status as `head + 1` and returns its number; at most
    /// `window` entries stay hot ([`hot_window`]).
    pub(crate) fn append(
        &mut self,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        now_ms: u64,
        window: usize,
    ) -> u64 {
        self.note_newest(self.head + 1);
        self.head += 1;
        self.push_newest(self.head, now_ms, text, extra, window);
        self.last_at_ms = now_ms;
        self.head
    }

    /// [`SessionLog::append`] within the bounds: first removes what they no longer allow with
    /// one more status held (what expired, and the oldest past `bounds.capacity - 1`), so one
    /// trim keeps them, not one before the status and one after. Returns its number and how
    /// many entries left.
    pub(crate) fn append_within(
        &mut self,
        bounds: Bounds,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        now_ms: u64,
        window: usize,
    ) -> (u64, u64) {
        // Expired first: a status arriving after a quiet spell must not revive old history.
        let mut removed = self.trim(
            bounds.capacity.saturating_sub(1),
            bounds.expiry,
            bounds.ttl_ms,
            now_ms,
        );
        let seq = self.append(text, extra, now_ms, window);
        // Only a rebase can drop entries in an append (see the module invariants).
        removed += std::mem::take(&mut self.dropped);
        (seq, removed)
    }

    /// Inserts a status numbered elsewhere (see the module invariants); `seq` must be at least 1.
    /// At most `window` entries stay hot ([`hot_window`]).
    pub(crate) fn insert(
        &mut self,
        seq: u64,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        now_ms: u64,
        capacity: usize,
        window: usize,
    ) -> Inserted {
        // Whatever becomes of this one, the window holds after (see the module invariants).
        self.cool(window);
        if seq == 0 {
            return Inserted::TooOld;
        }
        if seq > self.head {
            self.note_newest(seq);
            self.head = seq;
            self.last_at_ms = now_ms;
            self.push_newest(seq, now_ms, text, extra, window);
            return Inserted::Appended;
        }
        let at = self.partition(|held| held < seq);
        if self.seq_at(at) == Some(seq) {
            return Inserted::Duplicate;
        }
        let newest = self.back_seq().unwrap_or(seq);
        if at == 0 && (self.len() >= capacity || newest - seq > u64::from(u32::MAX)) {
            return Inserted::TooOld;
        }
        // A filled hole keeps the age of its neighbour so it leaves history with it.
        let at_ms = self.at_ms_at(at).unwrap_or(now_ms);
        let (seq_offset, age) = self.offsets(seq, at_ms);
        // A rebase may have moved the entries, so the place is found again.
        let at = self.partition(|held| held < seq);
        // A hole filled: whether any is left is only looked at by the next trim.
        self.holes = true;
        let cold = self.cold_len();
        if at >= cold {
            grow_hot(&mut self.hot, window);
            self.hot.insert(
                at - cold,
                Hot {
                    text,
                    extra,
                    seq: seq_offset,
                    age,
                },
            );
            self.cool(window);
            return Inserted::Filled;
        }
        let entry = Entry {
            seq: seq_offset,
            age,
            end: 0,
        };
        if !self.fill_cold(at, seq, entry, &text, extra) {
            return Inserted::TooOld;
        }
        Inserted::Filled
    }

    /// Puts a filled hole among the cold entries, at index `at`: its record goes between its
    /// neighbours' (its fields aside, since `tasks` only grows at the end); `false` if it does
    /// not fit in `bytes`.
    #[cold]
    fn fill_cold(
        &mut self,
        at: usize,
        seq: u64,
        entry: Entry,
        text: &str,
        extra: Option<Arc<Extra>>,
    ) -> bool {
        let len = 1 + text.len();
        if !self.bytes_fit(len) {
            return false;
        }
        let start = match at
            .checked_sub(1)
            .and_then(|before| self.entries.get(before))
        {
            Some(before) => before.end,
            None => self.bytes_front,
        };
        let tag = match &extra {
            Some(_) => HAS_FIELDS | FIELDS_ASIDE,
            None => 0,
        };
        let from = start.wrapping_sub(self.bytes_front) as usize;
        grow(&mut self.bytes, len, MIN_BYTES_GROWTH);
        self.bytes.push_back(tag);
        self.bytes.extend(text.as_bytes());
        if let Some(moved) = self.bytes.make_contiguous().get_mut(from..) {
            moved.rotate_right(len);
        }
        let grown = len as u32;
        for later in self.entries.range_mut(at..) {
            later.end = later.end.wrapping_add(grown);
        }
        grow(&mut self.entries, 1, MIN_GROWTH);
        self.entries.insert(
            at,
            Entry {
                end: start.wrapping_add(grown),
                ..entry
            },
        );
        if let Some(extra) = extra {
            let at = self.extras.partition_point(|(held, _)| *held < seq);
            self.extras.insert(at, (seq, extra));
        }
        true
    }

    /// Records that numbers up to `seq` were given elsewhere: those not held are lost, and
    /// readers report them as a gap.
    pub(crate) fn skip_to(&mut self, seq: u64) {
        if seq > self.head && self.len() > 0 {
            self.holes = true;
        }
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
        // Task ids and set-aside fields belong to cold entries only, and leave with them: with
        // none held, nothing is left to forget, and the oldest remaining entry is not read.
        let held_cold = !self.entries.is_empty();
        while self.len() > capacity {
            self.pop_front();
            removed += 1;
        }
        match expiry {
            HistoryExpiry::EachStatus => {
                while self
                    .at_ms_at(0)
                    .is_some_and(|at| now_ms.saturating_sub(at) >= ttl_ms)
                {
                    self.pop_front();
                    removed += 1;
                }
            }
            HistoryExpiry::AfterLastStatus => {
                if self.len() > 0 && now_ms.saturating_sub(self.last_at_ms) >= ttl_ms {
                    removed += self.clear();
                }
            }
        }
        if removed > 0 {
            if held_cold {
                let first = self.seq_at(0).unwrap_or(u64::MAX);
                self.forget_before(first);
            }
            debug_assert!(
                held_cold || (self.tasks.is_empty() && self.extras.is_empty()),
                "task ids or fields held without a cold entry"
            );
            if self.holes {
                self.holes = !self.numbers_run_on();
            }
        }
        removed
    }

    /// Drops every entry (keeping `head`); returns how many left.
    pub(crate) fn clear(&mut self) -> u64 {
        let removed = self.len() as u64 + std::mem::take(&mut self.dropped);
        self.entries = VecDeque::new();
        self.hot = VecDeque::new();
        self.bytes = VecDeque::new();
        self.tasks_base += self.tasks.len() as u64;
        self.tasks = VecDeque::new();
        self.extras = VecDeque::new();
        self.holes = false;
        removed
    }

    /// The index of the first entry numbered above `cursor`.
    fn index_after(&self, cursor: u64) -> usize {
        let len = self.len();
        if len == 0 {
            return 0;
        }
        // Numbers one by one (always so for locally published statuses): the place follows
        // from them, without a search, which would touch a cold cache line per probe.
        if !self.holes {
            let first = self.head.saturating_sub(len as u64 - 1);
            debug_assert_eq!(self.seq_at(0), Some(first), "`holes` out of step");
            let offset = cursor.saturating_add(1).saturating_sub(first);
            return usize::try_from(offset).map_or(len, |offset| offset.min(len));
        }
        self.partition(|held| held <= cursor)
    }

    /// The text and fields of the cold entry at `at`, numbered `seq`, made anew from its
    /// record.
    fn cold(&self, at: usize, seq: u64) -> (Arc<str>, Option<Arc<Extra>>) {
        let start = match at
            .checked_sub(1)
            .and_then(|before| self.entries.get(before))
        {
            Some(before) => before.end,
            None => self.bytes_front,
        };
        let end = self.entries.get(at).map_or(start, |entry| entry.end);
        let len = self.bytes.len();
        let to = (end.wrapping_sub(self.bytes_front) as usize).min(len);
        let from = (start.wrapping_sub(self.bytes_front) as usize).min(to);
        let mut at_byte = from;
        let tag = self.bytes.get(at_byte).copied().unwrap_or(0);
        at_byte += 1;
        let progress = (tag & HAS_PROGRESS != 0).then(|| {
            let current = take_number(&self.bytes, &mut at_byte, to);
            Progress::new(current, take_number(&self.bytes, &mut at_byte, to))
        });
        let task = (tag & HAS_TASK != 0)
            .then(|| take_number(&self.bytes, &mut at_byte, to))
            .and_then(|index| index.checked_sub(self.tasks_base))
            .and_then(|index| self.tasks.get(usize::try_from(index).ok()?))
            .map(|(_, id)| Arc::clone(id));
        let extra = if tag & FIELDS_ASIDE != 0 {
            self.extras
                .binary_search_by_key(&seq, |(held, _)| *held)
                .ok()
                .and_then(|at| self.extras.get(at))
                .map(|(_, extra)| Arc::clone(extra))
        } else {
            (tag & HAS_FIELDS != 0).then(|| Arc::new(Extra::new(task, progress)))
        };
        let text: Arc<str> = match slices(&self.bytes, at_byte.min(to), to) {
            (whole, []) => match std::str::from_utf8(whole) {
                Ok(text) => Arc::from(text),
                Err(_) => Arc::from(String::from_utf8_lossy(whole)),
            },
            (first, second) => {
                let joined = [first, second].concat();
                match String::from_utf8(joined) {
                    Ok(text) => Arc::from(text),
                    Err(e) => Arc::from(String::from_utf8_lossy(e.as_bytes())),
                }
            }
        };
        (text, extra)
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
        let cold = self.cold_len();
        let mut statuses = 0;
        while statuses < max_statuses {
            let hot = match at.checked_sub(cold) {
                Some(i) => match self.hot.get(i) {
                    Some(hot) => Some(hot),
                    None => break,
                },
                None => None,
            };
            let Some(seq) = hot.map_or_else(
                || self.seq_at(at),
                |hot| Some(self.base_seq + u64::from(hot.seq)),
            ) else {
                break;
            };
            if seq > cursor + 1 {
                gap_from.get_or_insert(cursor + 1);
                cursor = seq - 1;
            }
            flush_gap(out, &mut gap_from, cursor);
            let (text, extra) = match hot {
                Some(hot) => (Arc::clone(&hot.text), hot.extra.clone()),
                None => self.cold(at, seq),
            };
            out.push_back(Event::Status(Status::new(
                session.clone(),
                seq,
                text,
                extra,
            )));
            cursor = seq;
            statuses += 1;
            at += 1;
        }
        if at >= self.len() && cursor < self.head {
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
