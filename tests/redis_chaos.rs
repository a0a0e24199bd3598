//! Redis under chaos, mid-task: killed and restarted with and without its data, paused
//! (SIGSTOP, then SIGCONT), and cut off from one hub or both by a TCP proxy (connections
//! dropped and new ones refused, every byte held, or only Redis's replies held). Two hubs share
//! the Redis as two server processes would, each through its own proxy; statuses are
//! published on the first and read on both.
//!
//! Every case checks, on every subscriber, that each number is accounted for exactly once and
//! in order (its own status, or a gap); that a gap appears only where Redis lost data it had
//! not confirmed; and that no operation, during the fault or after, took longer than its
//! timeout allows. It prints the recovery times: from the end of the fault to the first status
//! each hub delivered after it, and to when each hub had caught up with the first status
//! published after it.
//!
//! Below the cases, tests pin down single faults exactly: a batch of unknown fate when Redis
//! restarts without its data, Redis restarted from an older snapshot, a session closed while a
//! hub was cut off (ended there too, and not reopened by a writer putting counters back), and
//! every call a request makes failing fast while Redis is away.
//!
//! Run with: cargo test --all-features --test redis_chaos -- --nocapture
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::proxy::{Mode, Proxy};
use common::{check_exact, prefix, shape, RedisServer};
use futures_util::StreamExt;
use status_messenger::hub::Published;
use status_messenger::{Event, Hub, HubConfig, RedisConfig, Subscription};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// `RedisConfig::timeout` of both hubs.
const TIMEOUT: Duration = Duration::from_millis(250);
/// No hub operation may take longer: its own bound (twice the timeout: a wait for a connection
/// and a command, or a close's confirmation), plus slack for a busy machine.
const OP_BOUND: Duration = Duration::from_millis(2 * 250 + 750);
/// How long subscribers may take to account for everything once publishing stopped.
const WAIT: Duration = Duration::from_secs(15);
/// The longest a whole case may take.
const CASE_BOUND: Duration = Duration::from_secs(45);
/// How long a fault lasts: over the readers' one-second check plus the timeout, so every hub
/// it touches notices, its commands time out and its reconnects fail.
const FAULT: Duration = Duration::from_millis(1500);
/// How long statuses go on after the fault ends.
const AFTER: Duration = Duration::from_millis(500);
const SESSIONS: [&str; 3] = ["s0", "s1", "s2"];
/// One status per session every this often.
const PACE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, down for a while, restarted from its append-only file.
    KillRestartWithData,
    /// SIGKILL, down for a while, restarted empty.
    KillRestartEmpty,
    /// SIGSTOP for a while, then SIGCONT.
    Pause,
    /// Both proxies drop every connection and refuse new ones for a while.
    CutBoth,
    /// Both proxies hold every byte for a while, then pass what they held.
    BlackholeBoth,
    /// Only the publishing hub is cut off (dropped and refused).
    CutPublisher,
    /// Only the other hub's bytes are held.
    BlackholeSubscriberHub,
    /// Redis's replies to the publishing hub are held (its commands still run), then passed.
    HoldRepliesToPublisher,
}

impl Fault {
    fn persistent(self) -> bool {
        self == Fault::KillRestartWithData
    }

    /// Redis loses data: gaps may cover what it had not confirmed.
    fn loses_data(self) -> bool {
        self == Fault::KillRestartEmpty
    }

    /// The hubs that lose Redis (A publishes, B only reads).
    fn touches(self) -> [bool; 2] {
        match self {
            Fault::CutPublisher | Fault::HoldRepliesToPublisher => [true, false],
            Fault::BlackholeSubscriberHub => [false, true],
            _ => [true, true],
        }
    }
}

async fn hub(url: String, prefix: &str) -> Hub {
    let mut config = HubConfig::default();
    config.history_capacity = 10_000;
    config.subscriber_buffer = 10_000;
    let mut redis = RedisConfig::new(url);
    redis.key_prefix = prefix.to_owned();
    redis.timeout = TIMEOUT;
    redis.reconnect_min = Duration::from_millis(10);
    redis.reconnect_max = Duration::from_millis(100);
    timeout(OP_BOUND, Hub::with_redis(config, redis))
        .await
        .expect("Hub::with_redis within its timeout")
        .expect("connect to redis")
}

/// What one subscriber received, and when.
struct Timeline {
    label: String,
    events: Vec<Event>,
    times: Vec<Instant>,
}

impl Timeline {
    /// When it first received an event at or after `from`.
    fn first_after(&self, from: Instant) -> Option<Instant> {
        self.times.iter().copied().find(|t| *t >= from)
    }

    /// When it had accounted for every number up to `seq`.
    fn reached(&self, seq: u64) -> Option<Instant> {
        self.events
            .iter()
            .zip(&self.times)
            .find(|(e, _)| e.last_seq() >= seq)
            .map(|(_, t)| *t)
    }
}

/// Reads until every number up to the target (set once publishing stops) is accounted for;
/// fails after `WAIT` from then, or if the stream ends.
async fn read_all(
    label: String,
    mut sub: Subscription,
    mut target: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
) -> Result<Timeline, String> {
    let mut timeline = Timeline {
        label,
        events: Vec::new(),
        times: Vec::new(),
    };
    let mut deadline: Option<Instant> = None;
    loop {
        let seen = timeline.events.last().map_or(0, Event::last_seq);
        let want = *target.borrow_and_update();
        if want != u64::MAX && deadline.is_none() {
            deadline = Some(Instant::now() + WAIT);
        }
        if seen >= want {
            return Ok(timeline);
        }
        let give_up = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = sub.next() => match event {
                Some(event) => {
                    timeline.times.push(Instant::now());
                    progress.send_replace(event.last_seq());
                    timeline.events.push(event);
                }
                None => return Err(format!("{}: stream ended at {seen}", timeline.label)),
            },
            _ = target.changed() => {}
            () = give_up => {
                return Err(format!(
                    "{}: only up to {seen} of {want} within {WAIT:?}: {:?}",
                    timeline.label,
                    shape(&timeline.events)
                ))
            }
        }
    }
}

/// Publishes `msg {i}` to every session, round `i` every `PACE`, until told to stop; returns
/// when each round was published and the slowest `publish` call.
async fn publish(
    hub: Hub,
    mut stop: watch::Receiver<bool>,
) -> Result<(Vec<Instant>, Duration), String> {
    let mut rounds = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok((rounds, slowest)),
        }
        let i = rounds.len() + 1;
        for session in SESSIONS {
            let started = Instant::now();
            let published = hub.publish(Some(session), format!("msg {i}"));
            slowest = slowest.max(started.elapsed());
            if published != Ok(Published::Queued) {
                return Err(format!("publish {i} to {session}: {published:?}"));
            }
        }
        rounds.push(Instant::now());
    }
}

/// Calls every hub operation that talks to Redis, on both hubs, over and over until told to
/// stop; each must return (with any result) within `OP_BOUND`. Returns the slowest.
async fn probe(hubs: [Hub; 2], mut stop: watch::Receiver<bool>) -> Result<Duration, String> {
    let mut slowest = Duration::ZERO;
    for round in 0u64.. {
        for (h, hub) in hubs.iter().enumerate() {
            let id = format!("probe-{h}-{round}");
            let started = Instant::now();
            let what = "open_session";
            if timeout(OP_BOUND, hub.open_session(&id)).await.is_err() {
                return Err(format!("{what} on hub {h} took over {OP_BOUND:?}"));
            }
            let what = "session_exists";
            let checked = Instant::now();
            if timeout(OP_BOUND, hub.session_exists(&id)).await.is_err() {
                return Err(format!("{what} on hub {h} took over {OP_BOUND:?}"));
            }
            let what = "close_session";
            let closing = Instant::now();
            if timeout(OP_BOUND, hub.close_session(&id)).await.is_err() {
                return Err(format!("{what} on hub {h} took over {OP_BOUND:?}"));
            }
            let each = [checked - started, closing - checked, closing.elapsed()];
            slowest = each.into_iter().fold(slowest, Duration::max);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => break,
        }
    }
    Ok(slowest)
}

struct Rig {
    server: RedisServer,
    proxies: [Proxy; 2],
}

impl Rig {
    /// Applies the fault; returns when it ends (Redis answers again, or the network is back).
    async fn apply(&mut self, fault: Fault) -> Instant {
        let [to_a, to_b] = &self.proxies;
        match fault {
            Fault::KillRestartWithData | Fault::KillRestartEmpty => {
                self.server.kill();
                tokio::time::sleep(FAULT).await;
                let server = &mut self.server;
                tokio::task::block_in_place(|| {
                    if fault.persistent() {
                        server.restart();
                    } else {
                        server.restart_empty();
                    }
                });
            }
            Fault::Pause => {
                self.server.pause();
                tokio::time::sleep(FAULT).await;
                self.server.resume();
            }
            Fault::CutBoth | Fault::CutPublisher => {
                let cut: &[&Proxy] = if fault == Fault::CutBoth {
                    &[to_a, to_b]
                } else {
                    &[to_a]
                };
                for proxy in cut {
                    proxy.refuse();
                    proxy.cut();
                }
                tokio::time::sleep(FAULT).await;
                for proxy in cut {
                    proxy.forward().await;
                }
            }
            Fault::BlackholeBoth | Fault::BlackholeSubscriberHub => {
                let held: &[&Proxy] = if fault == Fault::BlackholeBoth {
                    &[to_a, to_b]
                } else {
                    &[to_b]
                };
                for proxy in held {
                    proxy.set_mode(Mode::Blackhole);
                }
                tokio::time::sleep(FAULT).await;
                for proxy in held {
                    proxy.forward().await;
                }
            }
            Fault::HoldRepliesToPublisher => {
                to_a.set_mode(Mode::HoldReplies);
                tokio::time::sleep(FAULT).await;
                to_a.forward().await;
            }
        }
        Instant::now()
    }
}

/// Runs one case: subscribers on both hubs, statuses published on the first, the fault in the
/// middle; checks every subscriber and prints the recovery times.
async fn chaos(name: &str, fault: Fault) {
    let server = if fault.persistent() {
        RedisServer::start_persistent()
    } else {
        RedisServer::start()
    };
    let Some(server) = server else {
        return;
    };
    timeout(CASE_BOUND, run_case(name, fault, server))
        .await
        .unwrap_or_else(|_| panic!("{name}: the case took over {CASE_BOUND:?}"));
}

async fn run_case(name: &str, fault: Fault, server: RedisServer) {
    let proxies = [
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
    ];
    let prefix = prefix(name);
    let hubs = [
        hub(proxies[0].url(), &prefix).await,
        hub(proxies[1].url(), &prefix).await,
    ];
    let mut rig = Rig { server, proxies };

    let (target, target_rx) = watch::channel(u64::MAX);
    let mut progress = Vec::new();
    let readers: Vec<JoinHandle<Result<Timeline, String>>> = hubs
        .iter()
        .enumerate()
        .flat_map(|(h, hub)| SESSIONS.iter().map(move |s| (h, hub, *s)))
        .map(|(h, hub, session)| {
            let (seen, seen_rx) = watch::channel(0);
            progress.push(seen_rx);
            let label = format!("hub {} {session}", ["A", "B"][h]);
            tokio::spawn(read_all(
                label,
                hub.subscribe(session, None),
                target_rx.clone(),
                seen,
            ))
        })
        .collect();

    let (stop, stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(publish(hubs[0].clone(), stop_rx.clone()));
    // Statuses flow on both hubs before the fault.
    for seen in &mut progress {
        timeout(WAIT, seen.wait_for(|&seq| seq >= 50))
            .await
            .unwrap_or_else(|_| panic!("{name}: statuses did not flow before the fault"))
            .expect("reader alive");
    }
    let prober = tokio::spawn(probe([hubs[0].clone(), hubs[1].clone()], stop_rx));

    let fault_start = Instant::now();
    let fault_end = rig.apply(fault).await;
    // Statuses go on after the fault (not a wait for anything: the task keeps running).
    tokio::time::sleep(AFTER).await;
    stop.send_replace(true);

    let (rounds, slowest_publish) = timeout(OP_BOUND, publisher)
        .await
        .expect("publisher stops")
        .expect("publisher task")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let slowest_op = timeout(OP_BOUND * 6, prober)
        .await
        .expect("prober stops")
        .expect("prober task")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let total = rounds.len() as u64;
    target.send_replace(total);
    let mut timelines = Vec::new();
    for reader in readers {
        let timeline = timeout(WAIT + OP_BOUND, reader)
            .await
            .expect("reader returns")
            .expect("reader task")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        timelines.push(timeline);
    }

    // Every number once, in order, each status under its own number; gaps only where Redis
    // lost what it had: statuses published just before it died, in flight (their fate unknown,
    // counted as dropped) or applied but not yet heard by that hub when Redis died with them.
    let stats = hubs[0].stats();
    let mut gap_numbers = 0;
    let at_risk = (fault_start - Duration::from_millis(500))..=(fault_start + TIMEOUT);
    for timeline in &timelines {
        let missing = check_exact(&timeline.events, total);
        gap_numbers += missing.len();
        if fault.loses_data() {
            for n in &missing {
                let published = rounds[*n as usize - 1];
                assert!(
                    at_risk.contains(&published),
                    "{name}, {}: {n} in a gap, published {:?} after the fault began: {:?}",
                    timeline.label,
                    published.saturating_duration_since(fault_start),
                    shape(&timeline.events)
                );
            }
            let gaps = shape(&timeline.events)
                .iter()
                .filter(|(kind, ..)| *kind == 'g')
                .count();
            assert!(
                gaps <= 1,
                "{name}, {}: {:?}",
                timeline.label,
                shape(&timeline.events)
            );
        } else {
            assert!(
                missing.is_empty(),
                "{name}, {}: a gap although Redis kept its data: {:?}",
                timeline.label,
                shape(&timeline.events)
            );
        }
    }
    if !fault.loses_data() {
        assert_eq!(stats.dropped_backend, 0, "{name}: {stats:?}");
    }
    // The fault did reach the hubs it was meant for.
    for (h, touched) in fault.touches().into_iter().enumerate() {
        if touched {
            let stats = hubs[h].stats();
            assert!(
                stats.backend_errors > 0,
                "{name}: hub {h} noticed nothing: {stats:?}"
            );
        }
    }
    assert_eq!(stats.accepted, total * SESSIONS.len() as u64, "{stats:?}");
    assert!(
        slowest_publish < OP_BOUND,
        "{name}: a publish took {slowest_publish:?}"
    );

    // Recovery: from the end of the fault to the first status after it, and to having the
    // first status published after it.
    let first_new = rounds
        .iter()
        .position(|t| *t >= fault_end)
        .map(|i| i as u64 + 1);
    let mut report = Vec::new();
    for (h, mine) in timelines.chunks(SESSIONS.len()).enumerate() {
        let first = mine
            .iter()
            .filter_map(|t| t.first_after(fault_end))
            .min()
            .map(|t| t - fault_end);
        let caught_up = first_new.and_then(|seq| {
            mine.iter()
                .map(|t| t.reached(seq))
                .collect::<Option<Vec<_>>>()
                .and_then(|all| all.into_iter().max())
                .map(|t| t.saturating_duration_since(fault_end))
        });
        report.push(format!(
            "hub {}: first status {} ms, caught up {} ms",
            ["A", "B"][h],
            millis(first),
            millis(caught_up)
        ));
    }

    for (h, hub) in hubs.iter().enumerate() {
        timeout(OP_BOUND, hub.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{name}: shutdown of hub {h} took over {OP_BOUND:?}"));
    }
    // Every status was confirmed by Redis (the last replies may land after the statuses
    // reached subscribers; shutdown waits for them).
    let after = hubs[0].stats();
    assert_eq!(after.backend_buffered, 0, "{name}: {after:?}");
    assert_eq!(
        after.dropped_backend, stats.dropped_backend,
        "{name}: {after:?}"
    );
    println!(
        "chaos {name}: fault {} ms; {} statuses per session; recovery: {}; gap numbers {}, \
         dropped {}, reconnects A {} B {}; slowest operation {} ms, slowest publish {} us",
        (fault_end - fault_start).as_millis(),
        total,
        report.join(", "),
        gap_numbers,
        stats.dropped_backend,
        stats.backend_reconnects,
        hubs[1].stats().backend_reconnects,
        slowest_op.as_millis(),
        slowest_publish.as_micros()
    );
}

fn millis(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| d.as_millis().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_its_data() {
    chaos("kill-restart-with-data", Fault::KillRestartWithData).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_without_its_data() {
    chaos("kill-restart-empty", Fault::KillRestartEmpty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_and_continued() {
    chaos("pause", Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_between_redis_and_both_hubs() {
    chaos("cut-both", Fault::CutBoth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blackholed_between_redis_and_both_hubs() {
    chaos("blackhole-both", Fault::BlackholeBoth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_between_redis_and_the_publishing_hub() {
    chaos("cut-publisher", Fault::CutPublisher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blackholed_between_redis_and_the_other_hub() {
    chaos("blackhole-subscriber-hub", Fault::BlackholeSubscriberHub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_the_publishing_hub_held_while_its_commands_run() {
    chaos("hold-replies", Fault::HoldRepliesToPublisher).await;
}

/// The session's counter in Redis, read directly (`None` while it has none): the history
/// stream is the counter, its last entry `0-<first number>` taking `n` numbers.
fn counter_in_redis(server: &RedisServer, prefix: &str, session: &str) -> Option<u64> {
    let reply = server.command(&format!(
        "EVAL \"local e = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1] \
         if not e then return false end \
         return tonumber(string.sub(e[1], 3)) + tonumber(e[2][4]) - 1\" 1 {prefix}:{{{session}}}:log"
    ));
    // An integer, `:<value>\r\n`, or a null bulk string, `$-1\r\n`, when there is none.
    reply
        .strip_prefix(':')
        .and_then(|value| value.trim().parse().ok())
}

/// A batch that Redis applied and published, but whose reply the publishing hub never got, when
/// Redis then restarted without its data: the other hub, which had the batch, raised the
/// counter back to it on reconnecting; the publishing hub must then skip the batch's own
/// numbers, not as many numbers again on top of them. Before, its statuses after the restart
/// came under numbers shifted by the batch's size, behind a gap that covered nothing the other
/// hub had missed.
// One thread: the writer cannot take a batch until the test awaits, so the statuses
// published in a row make one batch.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_applied_but_unconfirmed_when_redis_loses_its_data_keeps_its_numbers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let to_a = Proxy::start(server.port()).await;
    let to_b = Proxy::start(server.port()).await;
    let prefix = prefix("unconfirmed");
    let a = hub(to_a.url(), &prefix).await;
    let b = hub(to_b.url(), &prefix).await;
    let mut on_a = a.subscribe("s", None);
    let mut on_b = b.subscribe("s", None);
    for i in 1..=10 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    let mut events_a = common::read_through(&mut on_a, 10, WAIT).await;
    let mut events_b = common::read_through(&mut on_b, 10, WAIT).await;

    // Redis runs the next batch and publishes it to B; its reply to A is held.
    to_a.set_mode(Mode::HoldReplies);
    for i in 11..=20 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events_b, 20, WAIT).await;
    assert_eq!(a.stats().backend_buffered, 10, "A has no confirmation");

    // Redis restarts empty. B comes back first and raises the counter to what it has seen.
    server.restart_empty();
    let deadline = Instant::now() + WAIT;
    while counter_in_redis(&server, &prefix, "s") != Some(20) {
        assert!(Instant::now() < deadline, "B did not raise the counter");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then A: the batch's fate is unknown to it, so its numbers are skipped.
    to_a.cut();
    to_a.forward().await;
    for i in 21..=30 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events_b, 30, WAIT).await;
    common::read_more(&mut on_a, &mut events_a, 30, WAIT).await;

    // B had the batch: no gap, every status under its own number.
    assert!(
        check_exact(&events_b, 30).is_empty(),
        "{:?}",
        shape(&events_b)
    );
    // A never got it: one gap, exactly the batch.
    assert_eq!(check_exact(&events_a, 30), (11..=20).collect::<Vec<_>>());
    assert_eq!(a.stats().dropped_backend, 10);
    assert_eq!(counter_in_redis(&server, &prefix, "s"), Some(30));
    for hub in [&a, &b] {
        timeout(OP_BOUND, hub.shutdown()).await.expect("shutdown");
    }
}

/// The other side of the same rule: a batch that never reached Redis (its bytes were held, and
/// lost with the Redis that was killed) while another hub numbered statuses of the same
/// session. The counter is then past the batch's numbers without anyone having seen it, so the
/// batch still takes as many fresh numbers: everyone gets a gap of its size, none is silent.
// One thread: the writer cannot take a batch until the test awaits, so the statuses
// published in a row make one batch.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_lost_on_the_way_while_another_hub_published_still_leaves_a_gap_of_its_size() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let to_a = Proxy::start(server.port()).await;
    let to_b = Proxy::start(server.port()).await;
    let prefix = prefix("lost-on-the-way");
    let a = hub(to_a.url(), &prefix).await;
    let b = hub(to_b.url(), &prefix).await;
    let mut on_b = b.subscribe("s", None);
    for i in 1..=10 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    let mut events = common::read_through(&mut on_b, 10, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(Instant::now() < deadline, "A's statuses not confirmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A's next batch is held on the way; B publishes five of its own meanwhile.
    to_a.set_mode(Mode::Blackhole);
    for i in 11..=20 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    for i in 1..=5 {
        b.publish(Some("s"), format!("b {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events, 15, WAIT).await;

    // Redis restarts empty (the held bytes die with the old connection); B raises the counter.
    server.restart_empty();
    while counter_in_redis(&server, &prefix, "s") != Some(15) {
        assert!(Instant::now() < deadline, "B did not raise the counter");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    to_a.forward().await;
    // A's lost batch is settled (numbered again) before its next statuses, which would
    // otherwise join it while A reconnects on a loaded machine.
    let deadline = Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(Instant::now() < deadline, "A's lost batch not settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 21..=25 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events, 30, WAIT).await;

    let mut expected: Vec<(char, u64, u64)> = (1..=15).map(|i| ('s', i, i)).collect();
    expected.push(('g', 16, 25));
    expected.extend((26..=30).map(|i| ('s', i, i)));
    assert_eq!(shape(&events), expected);
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Status(s) => Some(s.text()),
            _ => None,
        })
        .collect();
    assert_eq!(texts[10..15], ["b 1", "b 2", "b 3", "b 4", "b 5"]);
    assert_eq!(texts[15..], ["a 21", "a 22", "a 23", "a 24", "a 25"]);
    assert_eq!(a.stats().dropped_backend, 10);
    for hub in [&a, &b] {
        timeout(OP_BOUND, hub.shutdown()).await.expect("shutdown");
    }
}

/// Redis restarted from a snapshot older than what it had answered (an RDB file saved earlier,
/// or a replica that lagged) keeps its epoch, so no process sees it as data loss, and the
/// session's counter stands below numbers subscribers already had. A process that numbered the
/// session puts its counter back when it reconnects, so a writer with no floor of its own for
/// the session (here a process started after the restart) numbers new statuses after them.
/// Before, they came under numbers subscribers already had, and every reader skipped them as
/// duplicates: lost, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_loses_nothing_silently() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("stale");
    let to_a = Proxy::start(server.port()).await;
    let to_b = Proxy::start(server.port()).await;
    let a = hub(to_a.url(), &prefix).await;
    let b = hub(to_b.url(), &prefix).await;
    let mut on_b = b.subscribe("s", None);
    for i in 1..=10 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    let mut events = common::read_through(&mut on_b, 10, WAIT).await;
    // The snapshot holds 10; Redis goes on to 20 before it dies.
    assert!(server.command("SAVE").starts_with("+OK"));
    for i in 11..=20 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events, 20, WAIT).await;
    // Both hubs are kept away until Redis is back from the snapshot, and it has gone back.
    for proxy in [&to_a, &to_b] {
        proxy.refuse();
        proxy.cut();
    }
    tokio::task::block_in_place(|| server.restart());
    assert_eq!(counter_in_redis(&server, &prefix, "s"), Some(10));
    for proxy in [&to_a, &to_b] {
        proxy.forward().await;
    }
    let deadline = Instant::now() + WAIT;
    while b.stats().backend_reconnects < 2 || a.stats().backend_reconnects < 2 {
        assert!(Instant::now() < deadline, "hubs did not reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A, which numbered the session, put its counter back on reconnecting.
    while counter_in_redis(&server, &prefix, "s") != Some(20) {
        assert!(Instant::now() < deadline, "A did not put the counter back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A process started since publishes to the session, then A goes on.
    let c = hub(server.url(), &prefix).await;
    for i in 1..=5 {
        c.publish(Some("s"), format!("c {i}")).unwrap();
    }
    while c.stats().backend_buffered > 0 {
        assert!(Instant::now() < deadline, "C's statuses not confirmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 21..=25 {
        a.publish(Some("s"), format!("a {i}")).unwrap();
    }
    common::read_more(&mut on_b, &mut events, 25, WAIT).await;
    // Each of C's statuses arrives, or a gap tells of it.
    let from_c = events
        .iter()
        .filter(|e| matches!(e, Event::Status(s) if s.text().starts_with("c ")))
        .count() as u64;
    let gaps: u64 = events
        .iter()
        .map(|e| match e {
            Event::Gap(g) => g.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        from_c + gaps,
        5,
        "C's statuses neither delivered nor in a gap: {:?}",
        shape(&events)
    );
}

/// A session closed (and used again) while a hub was cut off from Redis: that hub misses the
/// close message, and finds out when it reconnects and reads the session again (Redis counts
/// each session's closes), so its subscribers' streams end there too, and none of them gets a
/// status of the new session under a number it already had. Before, the hub found the counter
/// below what it had applied and applied nothing: its streams never ended, and the new
/// session's statuses up to the old number never reached them, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closed_while_a_hub_was_cut_off_ends_its_streams_there_too() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let to_b = Proxy::start(server.port()).await;
    let prefix = prefix("closed-away");
    let a = hub(server.url(), &prefix).await;
    let b = hub(to_b.url(), &prefix).await;
    let mut on_a = a.subscribe("s", None);
    let mut on_b = b.subscribe("s", None);
    for i in 1..=5 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    common::read_through(&mut on_a, 5, WAIT).await;
    common::read_through(&mut on_b, 5, WAIT).await;

    to_b.refuse();
    to_b.cut();
    let closed = timeout(OP_BOUND, a.close_session("s"))
        .await
        .expect("close");
    assert!(closed.unwrap(), "the session existed");
    assert_eq!(timeout(WAIT, on_a.next()).await.expect("ends on A"), None);
    // The id is used again: a new session, numbered from 1.
    for i in 1..=3 {
        a.publish(Some("s"), format!("new {i}")).unwrap();
    }
    to_b.forward().await;

    // On B the old stream ends too, as it did on A.
    let ended = timeout(WAIT, async {
        loop {
            match on_b.next().await {
                None => return,
                Some(Event::Status(s)) => assert!(s.seq() > 5, "{s:?} delivered twice"),
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "B's stream did not end within {WAIT:?}");
}

/// How Redis goes away in [`with_redis_away_calls_fail_fast_and_work_again_once_it_is_back`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Away {
    /// SIGKILL; restarted (empty) afterwards.
    Killed,
    /// The proxy drops every connection and refuses new ones.
    Cut,
    /// The proxy holds every byte, so nothing tells the hub that Redis is gone.
    Blackholed,
}

/// With Redis away, every call a request makes (opening a session, looking one up, cancelling a
/// task; closing one too once Redis is known to be away) answers within half a second with an
/// error that says Redis is unavailable and when to try again, on the default timeouts, and
/// publishing goes on taking statuses. Once
/// Redis is back the same calls work again. Before, opening a session waited up to
/// `RedisConfig::timeout` (2 s) for a connection and as long again for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_calls_fail_fast_and_work_again_once_it_is_back() {
    const FAST: Duration = Duration::from_millis(500);
    for away in [Away::Killed, Away::Cut, Away::Blackholed] {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let proxy = Proxy::start(server.port()).await;
        let mut redis = RedisConfig::new(proxy.url());
        redis.key_prefix = prefix("fail-fast");
        let hub = timeout(
            Duration::from_secs(5),
            Hub::with_redis(HubConfig::default(), redis),
        )
        .await
        .expect("connect within its timeout")
        .expect("connect to redis");
        hub.open_session("before").await.expect("redis is there");

        match away {
            Away::Killed => server.kill(),
            Away::Cut => {
                proxy.refuse();
                proxy.cut();
            }
            Away::Blackholed => proxy.set_mode(Mode::Blackhole),
        }
        // Every call, over and over for a while: each answers within the bound, with an error.
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        let mut round = 0;
        while started.elapsed() < Duration::from_millis(1500) {
            round += 1;
            let id = format!("during-{round}");
            let t = Instant::now();
            let opened = timeout(FAST, hub.open_session(&id))
                .await
                .unwrap_or_else(|_| panic!("{away:?}: open_session took over {FAST:?}"));
            let error = opened.expect_err("opened a session with redis away");
            assert!(
                error.to_string().starts_with("redis: "),
                "{away:?}: {error}"
            );
            assert!(error.retry_after().is_some(), "{away:?}: {error}");
            slowest = slowest.max(t.elapsed());
            let t = Instant::now();
            let looked = timeout(FAST, hub.session_exists("before"))
                .await
                .unwrap_or_else(|_| panic!("{away:?}: session_exists took over {FAST:?}"));
            let error = looked.expect_err("looked a session up with redis away");
            assert!(error.retry_after().is_some(), "{away:?}: {error}");
            slowest = slowest.max(t.elapsed());
            // A close waits for its confirmation (up to twice `RedisConfig::timeout`) unless
            // Redis is known to be away; no request waits on it.
            if away != Away::Blackholed {
                let t = Instant::now();
                let closed = timeout(FAST, hub.close_session(&id))
                    .await
                    .unwrap_or_else(|_| panic!("{away:?}: close_session took over {FAST:?}"));
                assert!(
                    closed.is_err(),
                    "{away:?}: a close confirmed with redis away"
                );
                slowest = slowest.max(t.elapsed());
            }
            let t = Instant::now();
            let cancelled = timeout(FAST, hub.cancel_task("before", "some-task"))
                .await
                .unwrap_or_else(|_| panic!("{away:?}: cancel_task took over {FAST:?}"));
            assert!(cancelled.is_err(), "{away:?}: {cancelled:?}");
            slowest = slowest.max(t.elapsed());
            assert_eq!(
                hub.publish(Some("before"), format!("msg {round}")),
                Ok(Published::Queued)
            );
            // Not a tight loop: a request now and then.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let back = Instant::now();
        match away {
            Away::Killed => tokio::task::block_in_place(|| server.restart()),
            Away::Cut | Away::Blackholed => proxy.forward().await,
        }
        // Within the default backoff (at most 5 s between attempts), it works again.
        let deadline = Instant::now() + WAIT;
        loop {
            let opened = timeout(FAST, hub.open_session("after"))
                .await
                .unwrap_or_else(|_| panic!("{away:?}: open_session took over {FAST:?}"));
            if opened.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "{away:?}: still {opened:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let recovered = back.elapsed();
        assert!(hub.session_exists("after").await.expect("redis is back"));
        assert!(hub.close_session("after").await.expect("redis is back"));
        println!(
            "redis {away:?}: {round} rounds of calls, slowest {} us; working again {} ms after \
             redis was",
            slowest.as_micros(),
            recovered.as_millis()
        );
        timeout(Duration::from_secs(10), hub.shutdown())
            .await
            .expect("shutdown");
    }
}

/// The other side of putting counters back on reconnecting: a session another process closed
/// while this one was cut off stays closed; putting its counter back must not open it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_reconnecting_does_not_reopen_a_session_closed_meanwhile() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let to_a = Proxy::start(server.port()).await;
    let prefix = prefix("closed-stays");
    let a = hub(to_a.url(), &prefix).await;
    let b = hub(server.url(), &prefix).await;
    let mut on_b = b.subscribe("s", None);
    for i in 1..=5 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    common::read_through(&mut on_b, 5, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(Instant::now() < deadline, "A's statuses not confirmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    to_a.refuse();
    to_a.cut();
    assert!(timeout(OP_BOUND, b.close_session("s"))
        .await
        .expect("close")
        .expect("redis is there"));
    let reconnects = a.stats().backend_reconnects;
    to_a.forward().await;
    while a.stats().backend_reconnects < reconnects + 2 {
        assert!(Instant::now() < deadline, "A did not reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!b.session_exists("s").await.expect("redis is there"));
    assert_eq!(counter_in_redis(&server, &prefix, "s"), None);
}
