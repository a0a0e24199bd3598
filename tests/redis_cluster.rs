//! The Redis Cluster backend against a real local cluster started by the test (three masters,
//! one replica each): hubs standing for separate processes share sessions, sessions spread over
//! every shard, a master killed mid-task is replaced by its replica with every status delivered
//! once or covered by exactly one gap, a master killed and then another frozen with SIGSTOP
//! mid-task lose nothing silently and hang nothing, a partition's slot moved to another
//! master mid-task loses nothing, and the process that ran a task tells how it ended to a page
//! that connects there later.
//!
//! Run with: cargo test --all-features --test redis_cluster -- --nocapture
#![cfg(feature = "redis-cluster")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{check_exact, prefix, read_through, shape, until_told, ClusterNode, RedisCluster};
use futures_util::StreamExt;
use status_messenger::{Event, Hub, HubConfig, RedisClusterConfig, Subscription};

const WAIT: Duration = Duration::from_secs(20);

fn config(cluster: &RedisCluster, prefix: &str) -> RedisClusterConfig {
    let mut config = RedisClusterConfig::new(cluster.urls());
    config.key_prefix = prefix.to_owned();
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.timeout = Duration::from_millis(500);
    config
}

async fn hub(cluster: &RedisCluster, prefix: &str) -> Hub {
    Hub::with_redis_cluster(HubConfig::default(), config(cluster, prefix))
        .await
        .expect("connect to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_cross_processes_and_resume_on_the_other() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-cross");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    let mut on_b = b.subscribe("s1", None);
    let mut on_a = a.subscribe("s1", None);
    for i in 1..=200 {
        a.publish(Some("s1"), format!("msg {i}")).unwrap();
    }
    for sub in [&mut on_b, &mut on_a] {
        let events = read_through(sub, 200, WAIT).await;
        assert!(check_exact(&events, 200).is_empty(), "{:?}", shape(&events));
    }
    assert_eq!(b.stats().delivered, 200);

    // A page that saw 150 reloads onto the other process and resumes: nothing twice.
    drop(on_b);
    let mut resumed = b.subscribe("s1", Some(150));
    for i in 201..=210 {
        a.publish(Some("s1"), format!("msg {i}")).unwrap();
    }
    let events = read_through(&mut resumed, 210, WAIT).await;
    assert_eq!(
        shape(&events),
        (151..=210).map(|n| ('s', n, n)).collect::<Vec<_>>()
    );

    // Sessions opened or closed through one process are known to the other, also when the
    // masters forgot the scripts (as one that just took over may not have them).
    assert!(!b.session_exists("fresh").await.unwrap());
    for master in cluster.masters() {
        cluster.cli(master.port, &["script", "flush"]);
    }
    a.open_session("fresh").await.unwrap();
    assert!(b.session_exists("fresh").await.unwrap());
    assert!(b.close_session("s1").await.unwrap());
    let rest: Vec<Event> = tokio::time::timeout(WAIT, on_a.collect()).await.unwrap();
    assert!(
        rest.iter().all(|e| matches!(e, Event::Status(_))),
        "{rest:?}"
    );
    assert!(!a.session_exists("s1").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_every_shard_and_each_process_hears_only_its_partitions() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-spread");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    const SESSIONS: usize = 48;
    let mut subs: Vec<Subscription> = (0..SESSIONS)
        .map(|i| b.subscribe(format!("s{i}").as_str(), None))
        .collect();
    for n in 1..=20 {
        for i in 0..SESSIONS {
            a.publish(Some(&format!("s{i}")), format!("msg {n}"))
                .unwrap();
        }
    }
    for sub in &mut subs {
        let events = read_through(sub, 20, WAIT).await;
        assert!(check_exact(&events, 20).is_empty(), "{:?}", shape(&events));
    }
    // Every master holds some of the sessions.
    for master in cluster.masters() {
        let keys = cluster.scan(master.port, &format!("{prefix}:*:log:*"));
        assert!(
            !keys.is_empty(),
            "master {} holds no session: {:?}",
            master.port,
            cluster.masters()
        );
    }
    // Sharded subscriptions: one per partition served, each on the shard that owns it.
    assert_eq!(
        cluster.shard_channels(&prefix),
        16,
        "48 sessions cover the 16 partitions"
    );
    // A process with no subscriber subscribes to nothing: `a` holds no session.
    assert_eq!(a.stats().sessions, 0);
    assert_eq!(b.stats().sessions, SESSIONS as u64);
    drop(subs);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = cluster.shard_channels(&prefix);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed to {left}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a subscription until it accounts for `last`, noting when each item arrived.
async fn timed(mut sub: Subscription, last: u64) -> Vec<(Event, Instant)> {
    let mut events = Vec::new();
    let mut seen = 0;
    while seen < last {
        let event = tokio::time::timeout(WAIT * 2, sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled at {seen} of {last}"))
            .expect("stream ended early");
        seen = event.last_seq();
        events.push((event, Instant::now()));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_task_is_replaced_and_delivery_resumes() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-failover");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    const SESSIONS: usize = 12;
    const TOTAL: u64 = 1500;
    let names: Vec<String> = (0..SESSIONS).map(|i| format!("task-{i}")).collect();
    let mut readers = Vec::new();
    for name in &names {
        // A subscriber in the publishing process and one in the other.
        for hub in [&a, &b] {
            let sub = hub.subscribe(name.as_str(), None);
            readers.push((name.clone(), tokio::spawn(timed(sub, TOTAL))));
        }
    }
    let publisher = tokio::spawn({
        let a = a.clone();
        let names = names.clone();
        async move {
            for i in 1..=TOTAL {
                for name in &names {
                    assert!(a.publish(Some(name), format!("msg {i}")).is_ok());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The master holding the first session's partition.
    let victim = cluster
        .master_holding(&format!("{prefix}:*:log:task-0"))
        .expect("a master holds task-0");
    let affected: Vec<String> = names
        .iter()
        .filter(|name| {
            !cluster
                .scan(victim.port, &format!("{prefix}:*:log:{name}"))
                .is_empty()
        })
        .cloned()
        .collect();
    cluster.kill(victim.port);
    let killed = Instant::now();
    // Polls redis-cli; the readers and the publisher go on on the other worker.
    let promoted =
        tokio::task::block_in_place(|| cluster.wait_promoted(&victim.id, Duration::from_secs(15)));
    publisher.await.unwrap();

    let mut resumed_after_promotion = Duration::ZERO;
    let mut resumed_after_kill = Duration::ZERO;
    let mut missing_total = 0;
    for (name, reader) in readers {
        let events = reader.await.unwrap();
        let items: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
        // Every number once: a status, or within exactly one gap; every status once, in order
        // (a batch lost with its master may come again under later numbers).
        let missing = common::check_once_in_order(&items, TOTAL);
        missing_total += missing.len();
        if affected.contains(&name) {
            // Delivery of this session stopped with its master; the first item to arrive well
            // after the kill shows when it resumed.
            let resumed = events
                .iter()
                .map(|(_, at)| *at)
                .find(|at| *at > killed + Duration::from_millis(50))
                .expect("delivery resumed");
            resumed_after_promotion =
                resumed_after_promotion.max(resumed.saturating_duration_since(promoted));
            resumed_after_kill = resumed_after_kill.max(resumed - killed);
        }
    }
    let stats: HashMap<&str, u64> = [
        ("dropped_backend", a.stats().dropped_backend),
        ("backend_errors", a.stats().backend_errors),
    ]
    .into();
    eprintln!(
        "failover: {} of {SESSIONS} sessions on the killed master; replica promoted {:?} after \
         the kill; delivery resumed {:?} after the kill, {:?} after the promotion was seen; \
         {missing_total} numbers in gaps; {stats:?}",
        affected.len(),
        promoted - killed,
        resumed_after_kill,
        resumed_after_promotion,
    );
    assert!(!affected.is_empty());
    assert!(
        resumed_after_promotion <= Duration::from_secs(2),
        "delivery resumed {resumed_after_promotion:?} after the promotion"
    );
    // Every status the publisher handed over was confirmed by Redis in the end.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", a.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One reader's items with when each arrived, read until it accounts for the target set once
/// publishing stops (`u64::MAX` until then).
async fn timed_until(
    mut sub: Subscription,
    mut target: tokio::sync::watch::Receiver<u64>,
) -> Vec<(Event, Instant)> {
    let mut events: Vec<(Event, Instant)> = Vec::new();
    loop {
        let seen = events.last().map_or(0, |(e, _)| e.last_seq());
        let want = *target.borrow_and_update();
        if seen >= want {
            return events;
        }
        tokio::select! {
            event = tokio::time::timeout(WAIT, sub.next()) => {
                let event = event
                    .unwrap_or_else(|_| panic!("stalled at {seen} for {WAIT:?}"))
                    .expect("stream ended early");
                events.push((event, Instant::now()));
            }
            _ = target.changed() => {}
        }
    }
}

/// The masters holding at least one of `names`' histories, with the names each holds.
fn holders(
    cluster: &RedisCluster,
    prefix: &str,
    names: &[String],
) -> Vec<(ClusterNode, Vec<String>)> {
    cluster
        .masters()
        .into_iter()
        .map(|master| {
            let keys = cluster.scan(master.port, &format!("{prefix}:*:log:*"));
            let held: Vec<String> = names
                .iter()
                .filter(|name| {
                    keys.iter()
                        .any(|key| key.ends_with(&format!(":log:{name}")))
                })
                .cloned()
                .collect();
            (master, held)
        })
        .filter(|(_, held)| !held.is_empty())
        .collect()
}

/// When delivery of `affected` sessions resumed after `fault`: the latest, over their
/// readers, of the first item each received well after it.
fn resumed(
    timelines: &[(String, Vec<(Event, Instant)>)],
    affected: &[String],
    fault: Instant,
) -> Instant {
    timelines
        .iter()
        .filter(|(name, _)| affected.contains(name))
        .map(|(_, events)| {
            events
                .iter()
                .map(|(_, at)| *at)
                .find(|at| *at > fault + Duration::from_millis(50))
                .expect("delivery resumed")
        })
        .max()
        .expect("some session was affected")
}

/// Chaos on the cluster, mid-task, with a subscriber of every session on both hubs: one master
/// killed (its replica takes over), then another stopped with SIGSTOP for longer than the
/// cluster's node timeout (its replica takes over while it is frozen; continued, it rejoins as a
/// replica). Every status reaches every subscriber once or is covered by exactly one gap, no
/// call hangs beyond its timeout, and the time from each fault to delivery going on is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_killed_and_paused_mid_task_lose_nothing_silently() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-chaos");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    const SESSIONS: usize = 12;
    // A call's own bound (a wait for a connection and a command) plus slack for a busy machine.
    let op_bound = config(&cluster, &prefix).timeout * 2 + Duration::from_millis(750);
    let names: Vec<String> = (0..SESSIONS).map(|i| format!("job-{i}")).collect();
    let (target, target_rx) = tokio::sync::watch::channel(u64::MAX);
    let mut readers = Vec::new();
    for name in &names {
        for hub in [&a, &b] {
            let sub = hub.subscribe(name.as_str(), None);
            let reader = tokio::spawn(timed_until(sub, target_rx.clone()));
            readers.push((name.clone(), reader));
        }
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn({
        let a = a.clone();
        let names = names.clone();
        let mut stop = stop_rx.clone();
        async move {
            let mut rounds = 0u64;
            let mut slowest = Duration::ZERO;
            while !*stop.borrow_and_update() {
                rounds += 1;
                for name in &names {
                    let started = Instant::now();
                    assert!(a.publish(Some(name), format!("msg {rounds}")).is_ok());
                    slowest = slowest.max(started.elapsed());
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = stop.changed() => {}
                }
            }
            (rounds, slowest)
        }
    });
    // Calls on a request's path, on both hubs, over and over: none may hang.
    let prober = tokio::spawn({
        let hubs = [a.clone(), b.clone()];
        let mut stop = stop_rx;
        async move {
            let mut slowest = Duration::ZERO;
            for round in 0u64.. {
                for (h, hub) in hubs.iter().enumerate() {
                    let id = format!("probe-{h}-{round}");
                    let started = Instant::now();
                    let opened = tokio::time::timeout(op_bound, hub.open_session(&id)).await;
                    assert!(opened.is_ok(), "open_session hung on hub {h}");
                    let checked = Instant::now();
                    let exists = tokio::time::timeout(op_bound, hub.session_exists(&id)).await;
                    assert!(exists.is_ok(), "session_exists hung on hub {h}");
                    slowest = slowest.max(checked - started).max(checked.elapsed());
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => break,
                }
            }
            slowest
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A master holding some of the sessions is killed; its replica takes over.
    let held = holders(&cluster, &prefix, &names);
    let (killed_master, killed_sessions) = held.first().cloned().expect("a master holds some");
    cluster.kill(killed_master.port);
    let killed = Instant::now();
    let promoted_first = tokio::task::block_in_place(|| {
        cluster.wait_promoted(&killed_master.id, Duration::from_secs(15))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another master that still has its replica (not the one just promoted) is frozen past the
    // node timeout, so its replica takes over while it cannot tell; then it goes on.
    let held = holders(&cluster, &prefix, &names);
    let topology = cluster.topology();
    let (paused_master, paused_sessions) = held
        .into_iter()
        .find(|(master, _)| {
            topology
                .iter()
                .any(|n| !n.failed && n.master_id.as_deref() == Some(master.id.as_str()))
        })
        .expect("a master with a replica holds some sessions");
    cluster.pause(paused_master.port);
    let paused = Instant::now();
    let promoted_second = tokio::task::block_in_place(|| {
        cluster.wait_promoted(&paused_master.id, Duration::from_secs(15))
    });
    cluster.resume(paused_master.port);
    let continued = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.send_replace(true);

    let (total, slowest_publish) = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the publisher stops")
        .expect("publisher task");
    let slowest_op = tokio::time::timeout(WAIT, prober)
        .await
        .expect("the prober stops")
        .expect("prober task");
    target.send_replace(total);
    let mut timelines = Vec::new();
    for (name, reader) in readers {
        let events = tokio::time::timeout(WAIT * 2, reader)
            .await
            .expect("a reader returns")
            .expect("reader task");
        timelines.push((name, events));
    }
    let mut numbers_in_gaps = 0;
    for (name, events) in &timelines {
        let items: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
        // Every number once: a status, or within exactly one gap; every status once, in order
        // (a batch lost with its master may come again under later numbers).
        let missing = common::check_once_in_order(&items, total);
        assert!(
            missing.len() as u64 <= a.stats().dropped_backend,
            "{name}: {} numbers in gaps, {} dropped: {:?}",
            missing.len(),
            a.stats().dropped_backend,
            shape(&items)
        );
        numbers_in_gaps += missing.len();
    }
    let after_kill = resumed(&timelines, &killed_sessions, killed);
    let after_pause = resumed(&timelines, &paused_sessions, paused);
    eprintln!(
        "cluster chaos: {total} statuses per session. Master killed ({} of {SESSIONS} sessions): \
         replica promoted {:?} after, delivery resumed {:?} after the kill ({:?} after the \
         promotion was seen). Master paused ({} sessions): replica promoted {:?} after, delivery \
         resumed {:?} after the pause ({:?} after the promotion), continued {:?} after the \
         pause. {numbers_in_gaps} numbers in gaps over {} subscribers; dropped {}, errors A {} \
         B {}; slowest call {:?}, slowest publish {:?}",
        killed_sessions.len(),
        promoted_first - killed,
        after_kill - killed,
        after_kill.saturating_duration_since(promoted_first),
        paused_sessions.len(),
        promoted_second - paused,
        after_pause - paused,
        after_pause.saturating_duration_since(promoted_second),
        continued - paused,
        timelines.len(),
        a.stats().dropped_backend,
        a.stats().backend_errors,
        b.stats().backend_errors,
        slowest_op,
        slowest_publish,
    );
    for (fault, resumed_at, promoted_at) in [
        ("kill", after_kill, promoted_first),
        ("pause", after_pause, promoted_second),
    ] {
        let lag = resumed_at.saturating_duration_since(promoted_at);
        assert!(
            lag <= Duration::from_secs(2),
            "{fault}: delivery resumed {lag:?} after the promotion"
        );
    }
    assert!(
        slowest_publish < Duration::from_millis(100),
        "{slowest_publish:?}"
    );
    // Every status was confirmed by Redis in the end, or counted as dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", a.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for hub in [&a, &b] {
        tokio::time::timeout(WAIT, hub.shutdown())
            .await
            .expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_to_another_master_loses_nothing() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-move");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    const TOTAL: u64 = 1500;
    let on_b = b.subscribe("mover", None);
    let reader = tokio::spawn(timed(on_b, TOTAL));
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for i in 1..=TOTAL {
                assert!(a.publish(Some("mover"), format!("msg {i}")).is_ok());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The slot of the session's partition, its owner, and another master to move it to.
    let masters = cluster.masters();
    let (source, key) = masters
        .iter()
        .find_map(|m| {
            cluster
                .scan(m.port, &format!("{prefix}:*:log:mover"))
                .into_iter()
                .next()
                .map(|key| (m.clone(), key))
        })
        .expect("a master holds the session");
    let target = masters
        .iter()
        .find(|m| m.id != source.id)
        .expect("another master")
        .clone();
    let slot = cluster
        .cli(source.port, &["cluster", "keyslot", &key])
        .trim()
        .to_owned();
    let moved = Instant::now();
    tokio::task::block_in_place(|| {
        cluster.cli(
            target.port,
            &["cluster", "setslot", &slot, "importing", &source.id],
        );
        cluster.cli(
            source.port,
            &["cluster", "setslot", &slot, "migrating", &target.id],
        );
        loop {
            let keys = cluster.cli(source.port, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec![
                "migrate".to_owned(),
                "127.0.0.1".to_owned(),
                target.port.to_string(),
                String::new(),
                "0".to_owned(),
                "5000".to_owned(),
                "KEYS".to_owned(),
            ];
            args.extend(keys.iter().map(|k| (*k).to_owned()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.cli(source.port, &args);
        }
        for node in cluster.masters() {
            cluster.cli(
                node.port,
                &["cluster", "setslot", &slot, "node", &target.id],
            );
        }
    });
    let move_took = moved.elapsed();
    publisher.await.unwrap();
    let events = reader.await.unwrap();
    let items: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
    // A slot move loses nothing: every status once, in order, no gap.
    assert!(check_exact(&items, TOTAL).is_empty(), "{:?}", shape(&items));
    let holder = cluster.scan(target.port, &format!("{prefix}:*:log:mover"));
    assert!(!holder.is_empty(), "the session's history moved");
    // Delivery went on across the move: no pause longer than a second.
    let longest = events
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .max()
        .unwrap_or_default();
    eprintln!("slot {slot} moved in {move_took:?}; longest pause in delivery {longest:?}");
    assert!(longest < Duration::from_secs(1), "{longest:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.stats().backend_buffered > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", a.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A tool that reports a step every few milliseconds until it is cancelled.
fn stoppable_tool() -> u64 {
    for step in 1..=2_000 {
        if status_messenger::is_cancelled() {
            return step - 1;
        }
        status_messenger::add_status(
            status_messenger::StatusMessage::new(format!("step {step}")).progress(step, 2_000),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    2_000
}

/// Reads `sub` until `task`'s update in `state`; what came before it.
async fn until_task(
    sub: &mut Subscription,
    task: &str,
    state: status_messenger::TaskState,
) -> Vec<Event> {
    let mut before = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {state} update for {task}: {before:?}"))
            .expect("stream ended");
        match &event {
            Event::Task(update) if update.task() == task && update.state() == state => {
                return before
            }
            _ => before.push(event),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_process_stops_a_task_on_another_and_both_see_its_updates() {
    use status_messenger::{Messenger, TaskState};

    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-cancel");
    let a = hub(&cluster, &prefix).await;
    let b = hub(&cluster, &prefix).await;
    let messenger = Messenger::new();
    a.attach(&messenger).unwrap();
    let mut on_a = a.subscribe("s1", None);
    let mut on_b = b.subscribe("s1", None);
    let task = status_messenger::with_default(&messenger, || a.start_task("s1")).unwrap();
    let id = task.id().to_owned();
    let tool = tokio::task::spawn_blocking(move || task.run(stoppable_tool));

    // Both processes hear it start, then its steps, with their fields.
    for sub in [&mut on_a, &mut on_b] {
        let before = until_task(sub, &id, TaskState::Running).await;
        assert!(before.is_empty(), "before running: {before:?}");
        let mut seen = 0;
        while seen < 3 {
            let event = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("a step")
                .expect("stream ended");
            if let Event::Status(status) = event {
                assert_eq!(status.task(), Some(id.as_str()));
                assert_eq!(status.progress().map(|p| p.current()), Some(status.seq()));
                seen = status.seq();
            }
        }
    }
    // Stop, pressed on the page served by B.
    assert_eq!(
        b.cancel_task("s1", &id).await.unwrap(),
        TaskState::Cancelling
    );
    let done = tokio::time::timeout(WAIT, tool)
        .await
        .expect("the tool stopped")
        .unwrap();
    assert!(done < 2_000);
    // Each process: cancelling, then cancelled, and no status of the task in between.
    for sub in [&mut on_b, &mut on_a] {
        until_task(sub, &id, TaskState::Cancelling).await;
        let after = until_task(sub, &id, TaskState::Cancelled).await;
        assert!(
            after.iter().all(|e| !matches!(e, Event::Status(_))),
            "statuses after cancelling: {after:?}"
        );
    }
    // Both answer the final state; a new subscriber on B starts with it.
    let mut answer = b.cancel_task("s1", &id).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while answer != TaskState::Cancelled && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = b.cancel_task("s1", &id).await.unwrap();
    }
    assert_eq!(answer, TaskState::Cancelled);
    assert_eq!(
        a.cancel_task("s1", &id).await.unwrap(),
        TaskState::Cancelled
    );
    let mut late = b.subscribe("s1", Some(on_b.last_seq()));
    match tokio::time::timeout(WAIT, late.next()).await {
        Ok(Some(Event::Task(update))) => {
            assert_eq!(
                (update.task(), update.state()),
                (id.as_str(), TaskState::Cancelled)
            );
        }
        other => panic!("no snapshot first: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_first_connects_to_the_process_that_ran_a_task_sees_how_it_ended() {
    use status_messenger::{Messenger, TaskState};

    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = prefix("cluster-ended-here");
    let a = hub(&cluster, &prefix).await;
    let messenger = Messenger::new();
    a.attach(&messenger).unwrap();
    // Nobody subscribes: the process follows the session while the task runs, and hears its
    // `running` before the task goes on.
    let task = status_messenger::with_default(&messenger, || a.start_task("s1")).unwrap();
    let id = task.id().to_owned();
    let deadline = Instant::now() + WAIT; // for both waits together
    until_told(&a, "s1", &id, TaskState::Running, WAIT).await;
    let ctx = task.context().with_messenger(&messenger);
    ctx.run(|| {
        for step in 1..=5 {
            status_messenger::add_status_message(format!("step {step}"));
        }
    });
    assert_eq!(task.finish(), TaskState::Finished);
    // It follows the session until it has heard the end, then tells that, not `running`.
    let left = deadline.saturating_duration_since(Instant::now());
    until_told(&a, "s1", &id, TaskState::Finished, left).await;
    let mut page = a.subscribe("s1", None);
    let before = until_task(&mut page, &id, TaskState::Finished).await;
    assert!(before.is_empty(), "before the task's state: {before:?}");
    read_through(&mut page, 5, WAIT).await;
}
