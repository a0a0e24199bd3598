//! Tasks, cancel and structured statuses on the Redis backend, with two hubs standing for two
//! processes against a real `redis-server` started by the test: fields kept through Redis, task
//! updates reaching every process's subscribers, a cancel sent to either process reaching the
//! tool, a cancel that comes before the task is known in Redis applied when it is, and the
//! process that ran a task telling how it ended to a page that connects there later.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{prefix, until_told, RedisServer};
use futures_util::StreamExt;
use status_messenger::hub::CancelError;
use status_messenger::{
    add_status, add_status_message, is_cancelled, Event, Hub, HubConfig, JsonData, Level,
    Messenger, Progress, RedisConfig, StatusMessage, Subscription, TaskState,
};

const WAIT: Duration = Duration::from_secs(10);

async fn hub(server: &RedisServer, prefix: &str) -> Hub {
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = prefix.to_owned();
    Hub::with_redis(HubConfig::default(), redis)
        .await
        .expect("connect to redis")
}

/// A hub with a messenger attached, as a server process runs it.
async fn process(server: &RedisServer, prefix: &str) -> (Hub, Messenger) {
    let hub = hub(server, prefix).await;
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    (hub, messenger)
}

async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no event in time")
        .expect("stream ended")
}

/// Reads until the task's update in `state`; returns what came before it.
async fn until_task(sub: &mut Subscription, task: &str, state: TaskState) -> Vec<Event> {
    let mut before = Vec::new();
    loop {
        match next(sub).await {
            Event::Task(update) if update.task() == task && update.state() == state => {
                return before
            }
            event => before.push(event),
        }
    }
}

fn full() -> StatusMessage {
    StatusMessage::new("Reading\npage 3")
        .progress(3, 10)
        .level(Level::Warn)
        .key("reading")
        .data(JsonData::new(r#"{"url": "https://example.com", "n": [1, 2]}"#).unwrap())
}

#[tokio::test]
async fn structured_fields_go_through_redis_and_history() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("fields");
    let a = hub(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let mut on_b = b.subscribe("s", None);
    a.publish(Some("s"), "plain").unwrap();
    a.publish_message(Some("s"), full()).unwrap();

    let check = |event: Event, seq: u64| match event {
        Event::Status(status) if seq == 1 => {
            assert_eq!(
                (status.text(), status.progress(), status.key()),
                ("plain", None, None)
            );
        }
        Event::Status(status) => {
            assert_eq!(status.seq(), seq);
            assert_eq!(status.text(), "Reading\npage 3");
            assert_eq!(status.progress(), Some(Progress::new(3, 10)));
            assert_eq!(status.level(), Some(Level::Warn));
            assert_eq!(status.key(), Some("reading"));
            assert_eq!(
                status.data().map(JsonData::as_str),
                Some(r#"{"url":"https://example.com","n":[1,2]}"#)
            );
        }
        other => panic!("unexpected {other:?}"),
    };
    check(next(&mut on_b).await, 1);
    check(next(&mut on_b).await, 2);
    // A third process reads them back from history, and a resume too.
    let c = hub(&server, &prefix).await;
    let mut late = c.subscribe("s", None);
    check(next(&mut late).await, 1);
    check(next(&mut late).await, 2);
    let mut resumed = c.subscribe("s", Some(1));
    check(next(&mut resumed).await, 2);
}

#[tokio::test]
async fn task_updates_reach_the_subscribers_of_every_process_in_order() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("updates");
    let (a, messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let mut on_b = b.subscribe("s", None);
    let mut on_a = a.subscribe("s", None);
    // Both processes follow the session before the task starts: what happens from here on
    // comes live, in order. (A process that starts following a session later gets the tasks'
    // states first, then the history, as a page that connects does.)
    a.publish(Some("s"), "hello").unwrap();
    for sub in [&mut on_b, &mut on_a] {
        assert_eq!(next(sub).await.seq(), Some(1));
    }
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    let ctx = task.context().with_messenger(&messenger);
    ctx.run(|| {
        for step in 1..=5 {
            add_status(StatusMessage::new(format!("step {step}")).progress(step, 5));
        }
    });
    assert_eq!(task.finish(), TaskState::Finished);

    for sub in [&mut on_b, &mut on_a] {
        let mut seen = Vec::new();
        loop {
            match next(sub).await {
                Event::Status(status) => {
                    assert_eq!(status.task(), Some(id.as_str()));
                    assert_eq!(
                        status.progress().map(|p| p.current()),
                        Some(status.seq() - 1)
                    );
                    seen.push(format!("s{}", status.seq()));
                }
                Event::Task(update) => {
                    assert_eq!(update.task(), id);
                    seen.push(update.state().to_string());
                    if update.state() == TaskState::Finished {
                        assert_eq!(update.last_seq(), 6);
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The start comes before the first step and the end after the last, everywhere.
        let expected: Vec<String> = std::iter::once("running".to_owned())
            .chain((2..=6).map(|seq| format!("s{seq}")))
            .chain(std::iter::once("finished".to_owned()))
            .collect();
        assert_eq!(seen, expected);
    }

    // A page that connects to the other process now gets the state first, then the history.
    let mut reloaded = b.subscribe("s", None);
    match next(&mut reloaded).await {
        Event::Task(update) => {
            assert_eq!(
                (update.task(), update.state()),
                (id.as_str(), TaskState::Finished)
            );
            assert_eq!(update.last_seq(), 6);
        }
        other => panic!("expected the task first, got {other:?}"),
    }
    assert_eq!(next(&mut reloaded).await.seq(), Some(1));
    let c = hub(&server, &prefix).await;
    let mut fresh = c.subscribe("s", None);
    match next(&mut fresh).await {
        Event::Task(update) => assert_eq!(update.state(), TaskState::Finished),
        other => panic!("expected the task first, got {other:?}"),
    }
    assert_eq!(next(&mut fresh).await.seq(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_behind_a_burst_is_heard_before_its_steps_and_ends_after_them() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("burst");
    let (a, messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let mut on_b = b.subscribe("s", None);
    let mut on_a = a.subscribe("s", None);
    // Both follow the session live from here on.
    a.publish(Some("s"), "hello").unwrap();
    for sub in [&mut on_b, &mut on_a] {
        assert_eq!(next(sub).await.seq(), Some(1));
    }
    // Statuses still on their way to Redis when each task starts, and steps queued at once
    // behind it: the writer is busy on both sides of the task's change.
    const BURST: u64 = 150;
    let mut seq = 1;
    for round in 0..5 {
        for n in 0..BURST {
            a.publish(Some("s"), format!("before {round}.{n}")).unwrap();
        }
        let task = a.start_task("s").unwrap();
        let id = task.id().to_owned();
        let ctx = task.context().with_messenger(&messenger);
        ctx.run(|| {
            for step in 1..=BURST {
                add_status(StatusMessage::new(format!("step {step}")).progress(step, BURST));
            }
        });
        assert_eq!(task.finish(), TaskState::Finished);
        for sub in [&mut on_b, &mut on_a] {
            let mut running = None;
            let mut steps = 0;
            loop {
                match next(sub).await {
                    Event::Status(status) if status.task() == Some(id.as_str()) => {
                        assert_eq!(running, Some(seq + BURST), "step {} first", status.seq());
                        steps += 1;
                    }
                    Event::Status(status) => assert!(running.is_none(), "{status:?}"),
                    Event::Task(update) if update.state() == TaskState::Running => {
                        assert_eq!(update.task(), id);
                        running = Some(update.last_seq());
                    }
                    Event::Task(update) => {
                        assert_eq!(
                            (update.task(), update.state()),
                            (id.as_str(), TaskState::Finished)
                        );
                        assert_eq!(steps, BURST, "finished after {steps} steps");
                        assert_eq!(update.last_seq(), seq + 2 * BURST);
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        seq += 2 * BURST;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_starts_following_as_a_task_starts_hears_it_before_its_steps() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("follow-start");
    let (a, messenger) = process(&server, &prefix).await;
    a.publish(Some("s"), "hello").unwrap();
    for round in 0..10 {
        // The other process starts following the session while the task starts.
        let b = hub(&server, &prefix).await;
        let mut on_b = b.subscribe("s", None);
        for _ in 0..round {
            tokio::task::yield_now().await;
        }
        let task = a.start_task("s").unwrap();
        let id = task.id().to_owned();
        let ctx = task.context().with_messenger(&messenger);
        ctx.run(|| {
            for step in 1..=50 {
                add_status(StatusMessage::new(format!("step {step}")).progress(step, 50));
            }
        });
        assert_eq!(task.finish(), TaskState::Finished);
        let mut heard = false;
        let mut steps = 0;
        while steps < 50 {
            match next(&mut on_b).await {
                Event::Status(status) if status.task() == Some(id.as_str()) => {
                    assert!(
                        heard,
                        "round {round}: step {} before the task",
                        status.seq()
                    );
                    steps += 1;
                }
                Event::Task(update) if update.task() == id => heard = true,
                _ => {}
            }
        }
        b.shutdown().await;
    }
}

/// The simulated tool: a step every few milliseconds until asked to stop.
fn tool() -> u32 {
    for step in 1..=10_000 {
        if is_cancelled() {
            return step - 1;
        }
        add_status_message(format!("step {step}"));
        std::thread::sleep(Duration::from_millis(5));
    }
    10_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_process_reaches_the_tool() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("cancel");
    let (a, messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let mut on_b = b.subscribe("s", None);
    let mut on_a = a.subscribe("s", None);
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    let running = {
        let messenger = messenger.clone();
        tokio::task::spawn_blocking(move || {
            status_messenger::with_default(&messenger, || task.run(tool))
        })
    };
    // Every process hears the start before the first step.
    for sub in [&mut on_b, &mut on_a] {
        let before = until_task(sub, &id, TaskState::Running).await;
        assert!(before.is_empty(), "before running: {before:?}");
    }
    // Wait until the other process has seen a few steps, then press Stop there.
    let mut steps = 0;
    while steps < 3 {
        if let Event::Status(status) = next(&mut on_b).await {
            steps = status.seq();
        }
    }
    assert_eq!(
        b.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    let done = tokio::time::timeout(WAIT, running)
        .await
        .expect("the tool did not stop")
        .unwrap();
    assert!(done < 10_000);

    // No status of the task after its cancelling update, on either process.
    for sub in [&mut on_b, &mut on_a] {
        let before = until_task(sub, &id, TaskState::Cancelling).await;
        let cancelling_at = sub.last_seq();
        let after = until_task(sub, &id, TaskState::Cancelled).await;
        assert!(
            after.iter().all(|event| !matches!(event, Event::Status(_))),
            "statuses after cancelling: {after:?}"
        );
        assert!(before
            .iter()
            .all(|event| event.seq().is_none_or(|seq| seq <= cancelling_at)));
    }
    // Either process answers the final state from now on.
    let mut answer = b.cancel_task("s", &id).await.unwrap();
    while answer != TaskState::Cancelled {
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = b.cancel_task("s", &id).await.unwrap();
    }
    assert_eq!(a.cancel_task("s", &id).await.unwrap(), TaskState::Cancelled);
}

#[tokio::test]
async fn a_cancel_that_comes_before_the_task_is_known_is_applied_when_it_registers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("early");
    let (a, _messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    a.open_session("s").await.unwrap();
    let mut on_b = b.subscribe("s", None);

    // Started on A; its registration waits for this thread to yield, so Redis does not know
    // the task yet when the stop arrives there, as another process's cancel would leave it.
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    let reply = server.command(&format!("HSET {prefix}:{{s}}:tasks c:{id} 1"));
    assert!(reply.starts_with(':'), "{reply}");

    let stop = task.cancelled();
    tokio::time::timeout(WAIT, stop)
        .await
        .expect("the early cancel was not applied");
    assert_eq!(task.finish(), TaskState::Cancelled);
    until_task(&mut on_b, &id, TaskState::Cancelled).await;

    // Through the API: a cancel for a task no process has registered is refused as unknown,
    // and kept; a later registration of that id would start cancelled.
    assert!(matches!(
        b.cancel_task("s", "not-registered-yet").await,
        Err(CancelError::UnknownTask)
    ));
    let kept = server.command(&format!(
        "HEXISTS {prefix}:{{s}}:tasks c:not-registered-yet"
    ));
    assert!(kept.starts_with(":1"), "{kept}");
    assert!(matches!(
        b.cancel_task("no-such-session", &id).await,
        Err(CancelError::UnknownSession)
    ));
}

#[tokio::test]
async fn a_cancel_racing_the_registration_is_applied_either_way() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("race");
    let (a, _messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    a.open_session("s").await.unwrap();
    for _ in 0..5 {
        let task = a.start_task("s").unwrap();
        let id = task.id().to_owned();
        // Whichever reaches Redis first, the task ends up stopped.
        match b.cancel_task("s", &id).await {
            Ok(state) => assert_eq!(state, TaskState::Cancelling),
            Err(CancelError::UnknownTask) => {}
            Err(other) => panic!("unexpected {other}"),
        }
        tokio::time::timeout(WAIT, task.cancelled())
            .await
            .expect("the cancel was lost");
        assert_eq!(task.finish(), TaskState::Cancelled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_stream_or_reloading_on_another_process_never_cancels() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("reload");
    let (a, messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    let ctx = task.context().with_messenger(&messenger);
    let tool = std::thread::spawn(move || {
        ctx.run(|| {
            for step in 1..=40 {
                if is_cancelled() {
                    return false;
                }
                add_status_message(format!("step {step}"));
                std::thread::sleep(Duration::from_millis(2));
            }
            true
        })
    });
    let mut page = b.subscribe("s", None);
    while next(&mut page).await.seq().is_none_or(|seq| seq < 5) {}
    let seen = page.last_seq();
    drop(page);
    let mut reloaded = b.subscribe("s", Some(seen));
    let finished = tokio::task::spawn_blocking(move || tool.join().unwrap())
        .await
        .unwrap();
    assert!(finished);
    assert_eq!(task.finish(), TaskState::Finished);
    let before = until_task(&mut reloaded, &id, TaskState::Finished).await;
    let statuses: Vec<u64> = before.iter().filter_map(Event::seq).collect();
    assert_eq!(statuses, ((seen + 1)..=40).collect::<Vec<_>>());
}

/// The session log's remaining time to live, in ms, read from Redis.
fn log_ttl_ms(server: &RedisServer, prefix: &str, session: &str) -> i64 {
    let reply = server.command(&format!("PTTL {prefix}:{{{session}}}:log"));
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("PTTL reply {reply:?}"))
}

#[tokio::test]
async fn a_task_change_after_a_status_never_shortens_the_history_it_renewed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("ttl");
    let ttl = Duration::from_secs(20);
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = prefix.clone();
    let mut config = HubConfig::default();
    config.history_ttl = ttl;
    let a = Hub::with_redis(config, redis)
        .await
        .expect("connect to redis");
    let mut on_a = a.subscribe("s", None);
    a.publish(Some("s"), "hello").unwrap();
    assert_eq!(next(&mut on_a).await.seq(), Some(1));
    // The status renewed the log for 1.25 times the TTL; the statuses in the next quarter of
    // the TTL renew nothing, so what the task's changes write must not bring it below the TTL.
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    until_task(&mut on_a, &id, TaskState::Running).await;
    let left = log_ttl_ms(&server, &prefix, "s");
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap();
    assert!(
        left > ttl_ms,
        "{left} ms left after the task's change, less than the TTL of {ttl_ms} ms"
    );
    assert_eq!(task.finish(), TaskState::Finished);
    until_task(&mut on_a, &id, TaskState::Finished).await;
    assert!(log_ttl_ms(&server, &prefix, "s") > ttl_ms);
}

/// Waits until no process listens on the channel of `prefix`'s sessions (one Redis: one
/// channel for all of them), at most `within`.
async fn until_unsubscribed(server: &RedisServer, prefix: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let listeners = server.command(&format!("PUBSUB NUMSUB {prefix}:ch"));
        if listeners.lines().any(|line| line == ":0") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed: {listeners}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a task of session `s` on `hub` whose tool, on a thread of its own, adds one status
/// and then waits until it is cancelled (at most 60 s); the task, its id, and the tool's
/// thread, which says whether its wait was cut short.
fn start_waiting_tool(
    hub: &Hub,
    messenger: &Messenger,
) -> (
    status_messenger::Task,
    String,
    std::thread::JoinHandle<bool>,
) {
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let ctx = task.context().with_messenger(messenger);
    let tool = std::thread::spawn(move || {
        ctx.run(|| {
            add_status_message("working");
            status_messenger::sleep_unless_cancelled(Duration::from_secs(60))
        })
    });
    (task, id, tool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_first_connects_to_the_process_that_ran_a_task_sees_how_it_ended() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("ended-here");
    let (a, messenger) = process(&server, &prefix).await;
    a.open_session("s").await.unwrap();
    // The process follows the session while the task runs, so it hears the task's `running`;
    // nobody subscribes anywhere.
    let task = a.start_task("s").unwrap();
    let id = task.id().to_owned();
    until_told(&a, "s", &id, TaskState::Running, WAIT).await;
    let ctx = task.context().with_messenger(&messenger);
    ctx.run(|| {
        for step in 1..=5 {
            add_status_message(format!("step {step}"));
        }
    });
    assert_eq!(task.finish(), TaskState::Finished);
    // With the task ended and nobody subscribed, the process stops following the session, but
    // not before it has heard how the task ended: what it tells is that, not `running`.
    until_told(&a, "s", &id, TaskState::Finished, WAIT).await;
    let told = a.tasks("s").unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(
        (told[0].state(), told[0].last_seq()),
        (TaskState::Finished, 5)
    );
    // Then it stops listening: no session of the test is followed any more.
    until_unsubscribed(&server, &prefix, WAIT).await;
    let mut page = a.subscribe("s", None);
    let before = until_task(&mut page, &id, TaskState::Finished).await;
    assert!(before.is_empty(), "before the task's state: {before:?}");
    for seq in 1..=5 {
        assert_eq!(next(&mut page).await.seq(), Some(seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_shuts_down_tells_the_others_its_tasks_are_cancelling() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("shutdown-cancelling");
    let (a, messenger) = process(&server, &prefix).await;
    let b = hub(&server, &prefix).await;
    let mut on_b = b.subscribe("s", None);
    let (task, id, tool) = start_waiting_tool(&a, &messenger);
    let before = until_task(&mut on_b, &id, TaskState::Running).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(next(&mut on_b).await.seq(), Some(1));
    a.shutdown().await;
    let before = until_task(&mut on_b, &id, TaskState::Cancelling).await;
    assert!(before.is_empty(), "{before:?}");
    assert!(tool.join().unwrap(), "the tool's wait was cut short");
    drop(task);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_end_that_never_reached_redis_is_not_waited_for_past_the_session_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("lost-end");
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = prefix.clone();
    // Room for one change: with Redis frozen, the tasks' ends are refused, as in a long outage.
    redis.buffer_capacity = 1;
    let mut config = HubConfig::default();
    config.history_ttl = Duration::from_secs(3);
    let a = Hub::with_redis(config, redis).await.unwrap();
    a.open_session("s").await.unwrap();
    let first = a.start_task("s").unwrap();
    let id = first.id().to_owned();
    until_told(&a, "s", &id, TaskState::Running, WAIT).await;
    server.pause();
    let second = a.start_task("s").unwrap(); // takes the one place
    assert_eq!(first.finish(), TaskState::Finished); // its end is refused: never in Redis
    assert_eq!(second.finish(), TaskState::Finished);
    server.resume();
    // The process follows the session a while for those ends, then lets it go: it does not
    // stay subscribed (and renew the session's keys) for good.
    until_unsubscribed(&server, &prefix, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_shuts_down_tells_its_own_streams_its_tasks_are_cancelling() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Several rounds: whether the change comes back from Redis before the streams end is a
    // race, and the streams must get it either way.
    for round in 0..10 {
        let prefix = prefix(&format!("shutdown-local-{round}"));
        let (a, messenger) = process(&server, &prefix).await;
        let mut on_a = a.subscribe("s", None);
        let (task, id, tool) = start_waiting_tool(&a, &messenger);
        let before = until_task(&mut on_a, &id, TaskState::Running).await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(next(&mut on_a).await.seq(), Some(1));
        a.shutdown().await;
        let mut rest = Vec::new();
        while let Some(event) = tokio::time::timeout(WAIT, on_a.next())
            .await
            .expect("the stream ends")
        {
            rest.push(event);
        }
        let cancelling = rest.iter().filter(
            |event| matches!(event, Event::Task(update) if update.state() == TaskState::Cancelling),
        );
        assert_eq!(cancelling.count(), 1, "round {round}: {rest:?}");
        assert!(tool.join().unwrap(), "the tool's wait was cut short");
        drop(task);
    }
}
