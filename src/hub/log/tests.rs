//! Unit tests of the session log: numbering, trimming, re-basing, hot and cold entries and
//! the entry sizes.
use super::*;
use crate::status::Level;

/// Every entry cold: the records are what these tests read.
const COLD: usize = 0;
/// Every entry hot.
const HOT: usize = usize::MAX;

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
        log.append(text(&i.to_string()), None, 0, COLD);
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
        log.append(text("x"), None, 0, COLD);
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
        log.append(text("x"), None, 0, COLD);
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
    log.append(text("a"), None, 0, COLD);
    log.append(text("b"), None, 0, COLD);
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
        log.append(text("x"), None, 0, COLD);
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
    assert_eq!(
        log.insert(1, text("1"), None, 0, 10, COLD),
        Inserted::Appended
    );
    assert_eq!(
        log.insert(4, text("4"), None, 0, 10, COLD),
        Inserted::Appended
    );
    assert_eq!(
        log.insert(4, text("4"), None, 0, 10, COLD),
        Inserted::Duplicate
    );
    let (events, _) = read_all(&log, 0, 100);
    assert_eq!(shape(&events), vec![('s', 1, 1), ('g', 2, 3), ('s', 4, 4)]);
    assert_eq!(
        log.insert(3, text("3"), None, 0, 10, COLD),
        Inserted::Filled
    );
    assert_eq!(
        log.insert(2, text("2"), None, 0, 10, COLD),
        Inserted::Filled
    );
    let (events, _) = read_all(&log, 0, 100);
    assert_eq!(
        shape(&events),
        vec![('s', 1, 1), ('s', 2, 2), ('s', 3, 3), ('s', 4, 4)]
    );
    assert_eq!(log.head(), 4);
    assert_eq!(log.append(text("5"), None, 0, COLD), 5);
    assert_eq!(log.first_seq(), Some(1));
}

#[test]
fn index_after_agrees_with_a_search() {
    let mut contiguous = SessionLog::default();
    for _ in 0..10 {
        contiguous.append(text("x"), None, 0, COLD);
    }
    contiguous.trim(6, HistoryExpiry::EachStatus, 1000, 0);
    let mut holey = SessionLog::default();
    for seq in [3, 4, 7, 9, 10] {
        holey.insert(seq, text("x"), None, 0, 100, COLD);
    }
    for log in [&contiguous, &holey, &SessionLog::default()] {
        for cursor in (0..14).chain([u64::MAX - 1, u64::MAX]) {
            let searched = log.partition(|held| held <= cursor);
            assert_eq!(log.index_after(cursor), searched, "cursor {cursor}");
        }
    }
}

#[test]
fn the_place_follows_from_head_only_while_the_numbers_run_on_to_it() {
    let mut log = SessionLog::default();
    for seq in 1..=4 {
        log.insert(seq, text("x"), None, 0, 100, COLD);
    }
    assert!(!log.holes);
    // Numbers given elsewhere and not held: the entries no longer end at `head`.
    log.skip_to(6);
    assert!(log.holes);
    assert_eq!(
        shape(&read_all(&log, 2, 100).0),
        [('s', 3, 3), ('s', 4, 4), ('g', 5, 6)]
    );
    log.insert(7, text("x"), None, 0, 100, COLD);
    for cursor in 0..9 {
        assert_eq!(
            log.index_after(cursor),
            log.partition(|held| held <= cursor)
        );
    }
    // Once what skipped has left history, the numbers run on again.
    log.trim(1, HistoryExpiry::EachStatus, 1000, 0);
    assert!(!log.holes);
    log.append(text("y"), None, 0, COLD);
    assert_eq!(shape(&read_all(&log, 6, 100).0), [('s', 7, 7), ('s', 8, 8)]);
    log.clear();
    assert!(!log.holes);
}

#[test]
fn appending_within_bounds_trims_once_and_counts_what_left() {
    let bounds = Bounds {
        capacity: 3,
        expiry: HistoryExpiry::AfterLastStatus,
        ttl_ms: 100,
    };
    let mut log = SessionLog::default();
    let mut left = 0;
    for now in 0..5 {
        let (seq, removed) = log.append_within(bounds, text("x"), None, now, HOT);
        assert_eq!(seq, now + 1);
        left += removed;
        assert!(log.len() <= 3);
    }
    assert_eq!((log.len(), left), (3, 2));
    // A status after a quiet spell takes the expired history with it, and stays.
    let (seq, removed) = log.append_within(bounds, text("y"), None, 200, HOT);
    assert_eq!((seq, removed, log.len()), (6, 3, 1));
}

#[test]
fn the_hot_ring_doubles_but_not_past_its_window() {
    let mut log = SessionLog::default();
    let mut capacities = Vec::new();
    for _ in 0..40 {
        log.append(text("x"), None, 0, HOT);
        if capacities.last() != Some(&log.hot.capacity()) {
            capacities.push(log.hot.capacity());
        }
    }
    // 16, 32, 64: growing by a quarter from 16 would have taken six steps to 40.
    assert!(capacities.len() <= 3, "{capacities:?}");
    let mut windowed = SessionLog::default();
    for _ in 0..40 {
        windowed.append(text("x"), None, 0, 20);
    }
    assert_eq!(windowed.hot.len(), 20);
    assert!(windowed.hot.capacity() <= 21, "{}", windowed.hot.capacity());
}

#[test]
fn full_log_refuses_numbers_older_than_everything() {
    let mut log = SessionLog::default();
    log.insert(5, text("5"), None, 0, 1, COLD);
    assert_eq!(log.insert(3, text("3"), None, 0, 1, COLD), Inserted::TooOld);
    assert_eq!(log.insert(0, text("0"), None, 0, 1, COLD), Inserted::TooOld);
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
    log.append(text("1"), fields("a"), 0, COLD);
    log.append(text("2"), None, 0, COLD);
    log.append(text("3"), fields("c"), 0, COLD);
    log.insert(6, text("6"), fields("f"), 0, 10, COLD);
    log.insert(5, text("5"), None, 0, 10, COLD);
    log.insert(4, text("4"), fields("d"), 0, 10, COLD);
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
        log.append(text("x"), None, 0, COLD);
    }
    // Doubling would have made room for 128.
    let capacity = log.entries.capacity();
    assert!((100..=125).contains(&capacity), "capacity {capacity}");
}

#[test]
fn an_entry_is_12_bytes_a_hot_one_32_and_common_fields_48() {
    assert_eq!(std::mem::size_of::<Entry>(), 12);
    assert_eq!(std::mem::size_of::<Hot>(), 32);
    // And the fields of a task's status: its id and progress inline, the rarer ones boxed.
    assert_eq!(std::mem::size_of::<Extra>(), 48);
}

#[test]
fn numbers_far_apart_rebase_and_the_unrepresentable_leave_as_a_gap() {
    let far = u64::from(u32::MAX);
    let mut log = SessionLog::default();
    log.insert(10, text("a"), None, 0, 10, COLD);
    log.insert(far, text("b"), None, 0, 10, COLD);
    // u32::MAX - 10 above 10: both fit.
    assert_eq!(log.first_seq(), Some(10));
    log.insert(far + 20, text("c"), None, 0, 10, COLD);
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
    assert_eq!(
        log.insert(5, text("x"), None, 0, 10, COLD),
        Inserted::TooOld
    );
    assert_eq!(
        log.insert(far - 1, text("d"), None, 0, 10, COLD),
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
    log.append(text("old"), None, 0, COLD);
    log.append(text("mid"), None, 30 * day, COLD);
    // 60 days after the first: more than u32::MAX ms, so the base moves.
    log.append(text("new"), None, 60 * day, COLD);
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
    log.append(text("old"), None, 0, COLD);
    log.append(text("new"), None, 50, COLD);
    assert_eq!(log.trim(10, HistoryExpiry::EachStatus, 60, 60), 1);
    assert_eq!(log.first_seq(), Some(2));
    // The whole-history policy keeps both until the newest is too old.
    let mut log = SessionLog::default();
    log.append(text("old"), None, 0, COLD);
    log.append(text("new"), None, 50, COLD);
    assert_eq!(log.trim(10, HistoryExpiry::AfterLastStatus, 60, 60), 0);
    assert_eq!(log.trim(10, HistoryExpiry::AfterLastStatus, 60, 110), 2);
}

fn task_fields(task: &Arc<str>, current: u64) -> Option<Arc<Extra>> {
    Some(Arc::new(Extra::new(
        Some(Arc::clone(task)),
        Some(Progress::new(current, 100)),
    )))
}

fn statuses(events: Vec<Event>) -> Vec<Status> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn hot_reads_share_the_published_allocations() {
    let task: Arc<str> = Arc::from("task-1");
    let published = text("step 1");
    let mut log = SessionLog::default();
    log.append(Arc::clone(&published), task_fields(&task, 1), 0, HOT);
    let read = statuses(read_all(&log, 0, 100).0);
    assert!(Arc::ptr_eq(read[0].shared_text(), &published));
    assert_eq!(read[0].task().map(str::as_ptr), Some(task.as_ptr()));
    assert!(log.bytes.is_empty());
}

#[test]
fn cold_reads_rebuild_text_and_fields_sharing_the_task_id() {
    let task: Arc<str> = Arc::from("task-1");
    let mut rare = Extra::new(Some(Arc::clone(&task)), Some(Progress::new(2, 3)));
    rare.set_rare(Some(Level::Warn), Some("k".into()), None);
    let cases: Vec<(Arc<str>, Option<Arc<Extra>>)> = vec![
        (text("plain"), None),
        (text(""), None),
        (text("ünïcødé ✓ step"), task_fields(&task, u64::MAX)),
        (text("rare fields"), Some(Arc::new(rare))),
        (text("empty fields"), Some(Arc::new(Extra::default()))),
        (
            text("progress only"),
            Some(Arc::new(Extra::new(None, Some(Progress::new(0, 0))))),
        ),
        (
            text("task only"),
            Some(Arc::new(Extra::new(Some(Arc::clone(&task)), None))),
        ),
    ];
    let (mut hot, mut cold) = (SessionLog::default(), SessionLog::default());
    for (text, extra) in &cases {
        hot.append(Arc::clone(text), extra.clone(), 0, HOT);
        cold.append(Arc::clone(text), extra.clone(), 0, COLD);
    }
    assert!(cold.hot.is_empty());
    let (from_hot, from_cold) = (read_all(&hot, 0, 100).0, read_all(&cold, 0, 100).0);
    assert_eq!(from_hot, from_cold);
    for status in statuses(from_cold) {
        if let Some(id) = status.task() {
            assert_eq!(
                id.as_ptr(),
                task.as_ptr(),
                "one id for the task, not one per status"
            );
        }
    }
    // The task's statuses name one id, statuses of no task between them or not.
    assert_eq!(cold.tasks.len(), 1);
}

#[test]
fn records_wrap_around_their_positions() {
    let mut log = SessionLog {
        bytes_front: u32::MAX - 10,
        ..SessionLog::default()
    };
    for i in 0..20 {
        log.append(text(&format!("status {i}")), None, 0, COLD);
    }
    log.trim(5, HistoryExpiry::EachStatus, 1000, 0);
    let texts: Vec<String> = statuses(read_all(&log, 0, 100).0)
        .iter()
        .map(|s| s.text().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "status 15",
            "status 16",
            "status 17",
            "status 18",
            "status 19"
        ]
    );
    assert!(
        log.bytes_front < 1000,
        "positions wrapped: {}",
        log.bytes_front
    );
}

#[test]
fn task_ids_leave_with_the_last_status_naming_them() {
    let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
    let mut log = SessionLog::default();
    for (i, task) in [&a, &a, &a, &b, &b].into_iter().enumerate() {
        log.append(text("x"), task_fields(task, i as u64), 0, COLD);
    }
    assert_eq!(log.tasks.len(), 2);
    log.trim(3, HistoryExpiry::EachStatus, 1000, 0);
    // Status 3 still names `a`.
    assert_eq!(log.tasks.len(), 2);
    log.trim(2, HistoryExpiry::EachStatus, 1000, 0);
    assert_eq!(log.tasks.len(), 1);
    assert_eq!(statuses(read_all(&log, 0, 100).0)[0].task(), Some("b"));
    log.clear();
    assert!(log.tasks.is_empty());
    assert_eq!(Arc::strong_count(&a), 1);
}

#[test]
fn a_smaller_window_cools_the_hot_entries_and_gives_back_their_room() {
    let mut log = SessionLog::default();
    for _ in 0..100 {
        log.append(text("x"), None, 0, HOT);
    }
    assert_eq!(log.hot.len(), 100);
    log.append(text("y"), None, 0, 2);
    assert_eq!(log.hot.len(), 2);
    assert!(log.hot.capacity() <= 2 * 2 + MIN_HOT_GROWTH);
    let read = statuses(read_all(&log, 0, 1000).0);
    assert_eq!(read.len(), 101);
    assert_eq!(read[100].text(), "y");
}

/// A small deterministic generator, so a failure repeats.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Checks the invariants of the module docs that the other tests cannot see from outside.
fn check_invariants(log: &SessionLog, window: usize) {
    let seqs: Vec<u64> = (0..log.len()).filter_map(|at| log.seq_at(at)).collect();
    assert_eq!(seqs.len(), log.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sorted {seqs:?}");
    assert!(seqs.last().is_none_or(|last| *last <= log.head));
    if !log.holes {
        let first = (log.head + 1).saturating_sub(seqs.len() as u64);
        assert!(
            seqs.iter().copied().eq(first..=log.head) || seqs.is_empty(),
            "no holes said of {seqs:?}, head {}",
            log.head
        );
    }
    assert!(
        log.hot.len() <= window,
        "{} hot, window {window}",
        log.hot.len()
    );
    // The cold records fill `bytes` exactly, in order.
    let cold = log.cold_len();
    let mut start = log.bytes_front;
    for entry in &log.entries {
        let len = entry.end.wrapping_sub(start);
        assert!(len >= 1 && len as usize <= log.bytes.len());
        start = entry.end;
    }
    assert_eq!(start, log.bytes_end());
    let extras: Vec<u64> = log.extras.iter().map(|(seq, _)| *seq).collect();
    assert!(extras.windows(2).all(|w| w[0] < w[1]));
    assert!(
        extras.iter().all(|seq| seqs.contains(seq)),
        "{extras:?} of {seqs:?}"
    );
    let lasts: Vec<u64> = log.tasks.iter().map(|(last, _)| *last).collect();
    assert!(lasts.windows(2).all(|w| w[0] <= w[1]), "{lasts:?}");
    assert!(
        log.tasks.len() <= cold,
        "{} ids for {cold} cold entries",
        log.tasks.len()
    );
}

#[test]
fn every_window_reads_the_same() {
    let tasks: Vec<Arc<str>> = ["t1", "t2", "t3"].into_iter().map(Arc::from).collect();
    // Holes filled between held entries, the path that moves records within `bytes`.
    let mut filled_between = 0;
    for seed in 0..40 {
        let mut rng = Lcg(seed);
        // Fixed windows, and one that changes as subscribers would come and go.
        let windows = [0, 1, 3, HOT, 7];
        let mut logs: Vec<SessionLog> = windows.iter().map(|_| SessionLog::default()).collect();
        // The window each log was last given: trimming and clearing do not cool.
        let mut given = windows;
        let capacity = 1 + rng.below(30) as usize;
        let mut now = 0;
        for step in 0..300 {
            let varying = if rng.below(10) < 3 {
                0
            } else {
                1 + rng.below(5) as usize
            };
            let op = rng.below(100);
            now += rng.below(3);
            let text = text(&format!("s{step}{}", "é".repeat(rng.below(4) as usize)));
            let extra = match rng.below(5) {
                0 => None,
                1 => task_fields(&tasks[rng.below(3) as usize], step),
                2 => {
                    let mut extra = Extra::new(None, Some(Progress::new(step, 7)));
                    extra.set_rare(Some(Level::Info), None, None);
                    Some(Arc::new(extra))
                }
                3 => Some(Arc::new(Extra::new(Some(Arc::clone(&tasks[0])), None))),
                _ => Some(Arc::new(Extra::default())),
            };
            let head = logs[0].head();
            let seq = match rng.below(3) {
                0 => head + 1 + rng.below(3),
                _ => 1 + rng.below(head + 1),
            };
            let trim_age = rng.below(40);
            for ((log, window), given) in logs.iter_mut().zip(windows).zip(&mut given) {
                let window = if window == 7 { varying } else { window };
                match op {
                    0..=49 => {
                        log.append(Arc::clone(&text), extra.clone(), now, window);
                        *given = window;
                    }
                    50..=89 => {
                        let newest = log.back_seq();
                        let inserted = log.insert(
                            seq,
                            Arc::clone(&text),
                            extra.clone(),
                            now,
                            capacity,
                            window,
                        );
                        if inserted == Inserted::Filled && newest.is_some_and(|n| seq < n) {
                            filled_between += 1;
                        }
                        *given = window;
                    }
                    90..=97 => {
                        log.trim(capacity, HistoryExpiry::EachStatus, trim_age, now);
                    }
                    _ => {
                        log.clear();
                    }
                }
                log.trim(capacity, HistoryExpiry::EachStatus, 1000, now);
                check_invariants(log, *given);
            }
            let cursor = rng.below(logs[0].head() + 2);
            let (behind, max) = (1 + rng.below(40), 1 + rng.below(10) as usize);
            let reads: Vec<(Vec<Event>, Read)> = logs
                .iter()
                .map(|log| {
                    let mut out = VecDeque::new();
                    let read = log.read(cursor, behind, max, &id(), &mut out);
                    (out.into_iter().collect(), read)
                })
                .collect();
            for (i, other) in reads.iter().enumerate().skip(1) {
                assert_eq!(
                    &reads[0], other,
                    "seed {seed} step {step} window {}",
                    windows[i]
                );
            }
        }
    }
    assert!(
        filled_between > 100,
        "{filled_between} holes filled between entries"
    );
}
