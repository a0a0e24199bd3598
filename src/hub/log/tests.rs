//! Unit tests of the session log: numbering, trimming, re-basing and the entry sizes.
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
            let searched = log.entries.partition_point(|e| log.seq_of(e) <= cursor);
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
        let mut extra = Extra::default();
        extra.set_rare(None, Some(key.into()), None);
        Some(Arc::new(extra))
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
fn the_ring_grows_by_a_quarter_not_by_doubling() {
    let mut log = SessionLog::default();
    for _ in 0..100 {
        log.append(text("x"), None, 0);
    }
    // Doubling would have made room for 128.
    let capacity = log.entries.capacity();
    assert!((100..=125).contains(&capacity), "capacity {capacity}");
}

#[test]
fn an_entry_is_24_bytes_and_common_fields_48() {
    assert_eq!(std::mem::size_of::<Entry>(), 24);
    // And the fields of a task's status: its id and progress inline, the rarer ones boxed.
    assert_eq!(std::mem::size_of::<Extra>(), 48);
}

#[test]
fn numbers_far_apart_rebase_and_the_unrepresentable_leave_as_a_gap() {
    let far = u64::from(u32::MAX);
    let mut log = SessionLog::default();
    log.insert(10, text("a"), None, 0, 10);
    log.insert(far, text("b"), None, 0, 10);
    // u32::MAX - 10 above 10: both fit.
    assert_eq!(log.first_seq(), Some(10));
    log.insert(far + 20, text("c"), None, 0, 10);
    // 10 is more than u32::MAX below the newest: it leaves, and the next trim counts it.
    assert_eq!(log.first_seq(), Some(far));
    assert_eq!(log.trim(10, HistoryExpiry::EachStatus, 1000, 0), 1);
    let (events, _) = read_all(&log, 0, u64::MAX);
    assert_eq!(
        shape(&events),
        vec![
            ('g', 1, far - 1),
            ('s', far, far),
            ('g', far + 1, far + 19),
            ('s', far + 20, far + 20)
        ]
    );
    // A hole below everything, too far below the newest, is refused; one in reach fills.
    assert_eq!(log.insert(5, text("x"), None, 0, 10), Inserted::TooOld);
    assert_eq!(
        log.insert(far - 1, text("d"), None, 0, 10),
        Inserted::Filled
    );
    assert_eq!(log.first_seq(), Some(far - 1));
    let (events, _) = read_all(&log, far - 2, u64::MAX);
    assert_eq!(
        shape(&events)[..2],
        [('s', far - 1, far - 1), ('s', far, far)]
    );
}

#[test]
fn ages_far_apart_rebase_and_expire_in_order() {
    let day = 86_400_000;
    let mut log = SessionLog::default();
    log.append(text("old"), None, 0);
    log.append(text("mid"), None, 30 * day);
    // 60 days after the first: more than u32::MAX ms, so the base moves.
    log.append(text("new"), None, 60 * day);
    assert_eq!(log.len(), 3);
    // "old" is kept as 49.7 days old, still older than a 40-day limit...
    assert_eq!(
        log.trim(10, HistoryExpiry::EachStatus, 40 * day, 60 * day),
        1
    );
    assert_eq!(log.first_seq(), Some(2));
    // ...and the others keep their exact ages.
    assert_eq!(
        log.trim(10, HistoryExpiry::EachStatus, 30 * day, 60 * day - 1),
        0
    );
    assert_eq!(
        log.trim(10, HistoryExpiry::EachStatus, 30 * day, 60 * day),
        1
    );
    assert_eq!(log.first_seq(), Some(3));
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
