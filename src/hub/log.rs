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

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::Extra;
use super::{Event, Gap, HistoryExpiry, SessionId, Status};

/// One retained status: 32 bytes here plus the shared text allocation (a status with fields
/// also has one entry in `extras`).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// Milliseconds since the hub's epoch when the status was added.
    pub(crate) at_ms: u64,
    pub(crate) text: Arc<str>,
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
        self.entries.front().map(|e| e.seq)
    }

    /// Appends a locally published status as `head + 1` and returns its number.
    pub(crate) fn append(&mut self, text: Arc<str>, extra: Option<Arc<Extra>>, now_ms: u64) -> u64 {
        self.head += 1;
        self.entries.push_back(Entry {
            seq: self.head,
            at_ms: now_ms,
            text,
        });
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
            self.entries.push_back(Entry {
                seq,
                at_ms: now_ms,
                text,
            });
            if let Some(extra) = extra {
                self.extras.push_back((seq, extra));
            }
            return Inserted::Appended;
        }
        let at = self.entries.partition_point(|e| e.seq < seq);
        if self.entries.get(at).is_some_and(|e| e.seq == seq) {
            return Inserted::Duplicate;
        }
        if at == 0 && self.entries.len() >= capacity {
            return Inserted::TooOld;
        }
        // A filled hole keeps the age of its neighbour so it leaves history with it.
        let at_ms = self.entries.get(at).map_or(now_ms, |e| e.at_ms);
        self.entries.insert(at, Entry { seq, at_ms, text });
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
        let mut removed = 0;
        while self.entries.len() > capacity {
            self.entries.pop_front();
            removed += 1;
        }
        match expiry {
            HistoryExpiry::EachStatus => {
                while self
                    .entries
                    .front()
                    .is_some_and(|e| now_ms.saturating_sub(e.at_ms) >= ttl_ms)
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
            let first = self.entries.front().map_or(u64::MAX, |e| e.seq);
            while self.extras.front().is_some_and(|(seq, _)| *seq < first) {
                self.extras.pop_front();
            }
        }
        removed
    }

    /// Drops every entry (keeping `head`); returns how many left.
    pub(crate) fn clear(&mut self) -> u64 {
        let removed = self.entries.len() as u64;
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
            (Some(first), Some(last)) if last.seq - first.seq + 1 == len as u64 => {
                let offset = cursor.saturating_add(1).saturating_sub(first.seq);
                usize::try_from(offset).map_or(len, |offset| offset.min(len))
            }
            _ => self.entries.partition_point(|e| e.seq <= cursor),
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
            if entry.seq > cursor + 1 {
                gap_from.get_or_insert(cursor + 1);
                cursor = entry.seq - 1;
            }
            flush_gap(out, &mut gap_from, cursor);
            while self
                .extras
                .get(extra_at)
                .is_some_and(|(seq, _)| *seq < entry.seq)
            {
                extra_at += 1;
            }
            let extra = match self.extras.get(extra_at) {
                Some((seq, extra)) if *seq == entry.seq => Some(Arc::clone(extra)),
                _ => None,
            };
            out.push_back(Event::Status(Status::new(
                session.clone(),
                entry.seq,
                Arc::clone(&entry.text),
                extra,
            )));
            cursor = entry.seq;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn id() -> SessionId {
        SessionId::from_checked("s")
    }

    fn read_all(log: &SessionLog, cursor: u64, behind: u64) -> (Vec<Event>, Read) {
        let mut out = VecDeque::new();
        let read = log.read(cursor, behind, usize::MAX, &id(), &mut out);
        (out.into_iter().collect(), read)
    }

    fn shape(events: &[Event]) -> Vec<(char, u64, u64)> {
        events
            .iter()
            .map(|e| match e {
                Event::Status(s) => ('s', s.seq(), s.seq()),
                Event::Gap(g) => ('g', g.from(), g.to()),
                Event::Task(_) => ('t', 0, 0),
            })
            .collect()
    }

    #[test]
    fn reads_after_cursor_and_reports_trimmed_front() {
        let mut log = SessionLog::default();
        for i in 0..10 {
            log.append(text(&i.to_string()), None, 0);
        }
        assert_eq!(log.trim(4, HistoryExpiry::EachStatus, 1000, 0), 6);
        let (events, read) = read_all(&log, 2, 100);
        assert_eq!(
            shape(&events),
            vec![
                ('g', 3, 6),
                ('s', 7, 7),
                ('s', 8, 8),
                ('s', 9, 9),
                ('s', 10, 10)
            ]
        );
        assert_eq!(
            (read.cursor, read.gaps, read.lagged, read.statuses),
            (10, 1, 4, 4)
        );
    }

    #[test]
    fn far_behind_reader_is_moved_forward() {
        let mut log = SessionLog::default();
        for _ in 0..10 {
            log.append(text("x"), None, 0);
        }
        let (events, _) = read_all(&log, 0, 3);
        assert_eq!(
            shape(&events),
            vec![('g', 1, 7), ('s', 8, 8), ('s', 9, 9), ('s', 10, 10)]
        );
    }

    #[test]
    fn adjacent_missing_ranges_make_one_gap() {
        let mut log = SessionLog::default();
        for _ in 0..10 {
            log.append(text("x"), None, 0);
        }
        log.trim(2, HistoryExpiry::EachStatus, 1000, 0);
        // Behind by more than 5 (floor 5), and 6..=8 left history too.
        let (events, read) = read_all(&log, 1, 5);
        assert_eq!(
            shape(&events),
            vec![('g', 2, 8), ('s', 9, 9), ('s', 10, 10)]
        );
        assert_eq!((read.gaps, read.lagged), (1, 7));
    }

    #[test]
    fn cleared_log_owes_a_gap_up_to_head() {
        let mut log = SessionLog::default();
        log.append(text("a"), None, 0);
        log.append(text("b"), None, 0);
        assert_eq!(log.trim(10, HistoryExpiry::AfterLastStatus, 5, 5), 2);
        let (events, read) = read_all(&log, 1, 100);
        assert_eq!(shape(&events), vec![('g', 2, 2)]);
        assert_eq!(read.cursor, 2);
        let (events, _) = read_all(&log, 2, 100);
        assert!(events.is_empty());
    }

    #[test]
    fn batches_stop_at_max_statuses_without_a_false_gap() {
        let mut log = SessionLog::default();
        for _ in 0..5 {
            log.append(text("x"), None, 0);
        }
        let mut out = VecDeque::new();
        let read = log.read(0, 100, 2, &id(), &mut out);
        assert_eq!(read.cursor, 2);
        assert_eq!(read.gaps, 0);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn external_numbers_fill_holes_or_leave_gaps() {
        let mut log = SessionLog::default();
        assert_eq!(log.insert(1, text("1"), None, 0, 10), Inserted::Appended);
        assert_eq!(log.insert(4, text("4"), None, 0, 10), Inserted::Appended);
        assert_eq!(log.insert(4, text("4"), None, 0, 10), Inserted::Duplicate);
        let (events, _) = read_all(&log, 0, 100);
        assert_eq!(shape(&events), vec![('s', 1, 1), ('g', 2, 3), ('s', 4, 4)]);
        assert_eq!(log.insert(3, text("3"), None, 0, 10), Inserted::Filled);
        assert_eq!(log.insert(2, text("2"), None, 0, 10), Inserted::Filled);
        let (events, _) = read_all(&log, 0, 100);
        assert_eq!(
            shape(&events),
            vec![('s', 1, 1), ('s', 2, 2), ('s', 3, 3), ('s', 4, 4)]
        );
        assert_eq!(log.head(), 4);
        assert_eq!(log.append(text("5"), None, 0), 5);
        assert_eq!(log.first_seq(), Some(1));
    }

    #[test]
    fn index_after_agrees_with_a_search() {
        let mut contiguous = SessionLog::default();
        for _ in 0..10 {
            contiguous.append(text("x"), None, 0);
        }
        contiguous.trim(6, HistoryExpiry::EachStatus, 1000, 0);
        let mut holey = SessionLog::default();
        for seq in [3, 4, 7, 9, 10] {
            holey.insert(seq, text("x"), None, 0, 100);
        }
        for log in [&contiguous, &holey, &SessionLog::default()] {
            for cursor in (0..14).chain([u64::MAX - 1, u64::MAX]) {
                let searched = log.entries.partition_point(|e| e.seq <= cursor);
                assert_eq!(log.index_after(cursor), searched, "cursor {cursor}");
            }
        }
    }

    #[test]
    fn full_log_refuses_numbers_older_than_everything() {
        let mut log = SessionLog::default();
        log.insert(5, text("5"), None, 0, 1);
        assert_eq!(log.insert(3, text("3"), None, 0, 1), Inserted::TooOld);
        assert_eq!(log.insert(0, text("0"), None, 0, 1), Inserted::TooOld);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn fields_stay_with_their_status_and_leave_with_it() {
        let fields = |key: &str| {
            Some(Arc::new(Extra {
                key: Some(key.into()),
                ..Extra::default()
            }))
        };
        let keys = |log: &SessionLog, cursor: u64| -> Vec<(u64, Option<String>)> {
            read_all(log, cursor, 100)
                .0
                .into_iter()
                .filter_map(|e| match e {
                    Event::Status(s) => Some((s.seq(), s.key().map(str::to_owned))),
                    _ => None,
                })
                .collect()
        };
        let mut log = SessionLog::default();
        log.append(text("1"), fields("a"), 0);
        log.append(text("2"), None, 0);
        log.append(text("3"), fields("c"), 0);
        log.insert(6, text("6"), fields("f"), 0, 10);
        log.insert(5, text("5"), None, 0, 10);
        log.insert(4, text("4"), fields("d"), 0, 10);
        assert_eq!(
            keys(&log, 0),
            [
                (1, Some("a".into())),
                (2, None),
                (3, Some("c".into())),
                (4, Some("d".into())),
                (5, None),
                (6, Some("f".into()))
            ]
        );
        assert_eq!(keys(&log, 4), [(5, None), (6, Some("f".into()))]);
        log.trim(3, HistoryExpiry::EachStatus, 1000, 0);
        assert_eq!(log.extras.len(), 2);
        assert_eq!(keys(&log, 0)[0], (4, Some("d".into())));
        log.clear();
        assert!(log.extras.is_empty());
    }

    #[test]
    fn each_status_expires_by_age() {
        let mut log = SessionLog::default();
        log.append(text("old"), None, 0);
        log.append(text("new"), None, 50);
        assert_eq!(log.trim(10, HistoryExpiry::EachStatus, 60, 60), 1);
        assert_eq!(log.first_seq(), Some(2));
        // The whole-history policy keeps both until the newest is too old.
        let mut log = SessionLog::default();
        log.append(text("old"), None, 0);
        log.append(text("new"), None, 50);
        assert_eq!(log.trim(10, HistoryExpiry::AfterLastStatus, 60, 60), 0);
        assert_eq!(log.trim(10, HistoryExpiry::AfterLastStatus, 60, 110), 2);
    }
}
