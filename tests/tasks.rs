//! Tasks in the hub: their lifecycle, the updates subscribers get (live, and as a snapshot on
//! every subscribe and resume, before the history), their order among the statuses, the bound
//! on remembered tasks, and their expiry with the session.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use status_messenger::hub::{CancelError, PublishError, StartTaskError};
use status_messenger::messenger::CURRENT_WEBSOCKET_SESSION_ID;
use status_messenger::{Event, Hub, HubConfig, Messenger, Subscription, TaskState, TaskUpdate};

fn config(edit: impl FnOnce(&mut HubConfig)) -> HubConfig {
    let mut config = HubConfig::default();
    edit(&mut config);
    config
}

/// `('s', seq)` for a status, `('g', to)` for a gap, `('t', state)` for a task update.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    S(u64),
    G(u64, u64),
    T(String, TaskState, u64),
}

fn item(event: Event) -> Item {
    match event {
        Event::Status(status) => Item::S(status.seq()),
        Event::Gap(gap) => Item::G(gap.from(), gap.to()),
        Event::Task(update) => Item::T(update.task().to_owned(), update.state(), update.last_seq()),
        other => panic!("unexpected event {other:?}"),
    }
}

/// Everything the subscription has ready now, without waiting.
fn ready(sub: &mut Subscription) -> Vec<Item> {
    let mut items = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        items.push(item(event));
    }
    items
}

fn update(event: Option<Event>) -> TaskUpdate {
    match event {
        Some(Event::Task(update)) => update,
        other => panic!("expected a task update, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_goes_from_running_to_each_final_state() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let mut sub = hub.subscribe("s", None);

    let finished = hub.start_task("s").unwrap();
    let failed = hub.start_task("s").unwrap();
    let cancelled = hub.start_task("s").unwrap();
    let (f, x, c) = (
        finished.id().to_owned(),
        failed.id().to_owned(),
        cancelled.id().to_owned(),
    );
    assert_eq!(finished.session(), "s");
    assert_eq!(hub.stats().tasks, 3);

    assert_eq!(finished.finish(), TaskState::Finished);
    assert_eq!(failed.fail("no results"), TaskState::Failed);
    assert_eq!(cancelled.cancel(), TaskState::Cancelling);
    assert_eq!(cancelled.finish(), TaskState::Cancelled);

    assert_eq!(
        ready(&mut sub),
        [
            Item::T(f.clone(), TaskState::Running, 0),
            Item::T(x.clone(), TaskState::Running, 0),
            Item::T(c.clone(), TaskState::Running, 0),
            Item::T(f.clone(), TaskState::Finished, 0),
            Item::T(x.clone(), TaskState::Failed, 0),
            Item::T(c.clone(), TaskState::Cancelling, 0),
            Item::T(c.clone(), TaskState::Cancelled, 0),
        ]
    );
    let failed = hub
        .tasks("s")
        .unwrap()
        .into_iter()
        .find(|t| t.task() == x)
        .unwrap();
    assert_eq!(failed.message(), Some("no results"));

    // Cancelling an ended task changes nothing and answers the state it ended in.
    assert_eq!(hub.cancel_task("s", &f).await.unwrap(), TaskState::Finished);
    assert_eq!(hub.cancel_task("s", &x).await.unwrap(), TaskState::Failed);
    assert_eq!(
        hub.cancel_task("s", &c).await.unwrap(),
        TaskState::Cancelled
    );
    assert!(ready(&mut sub).is_empty());

    let names: Vec<_> = [
        TaskState::Running,
        TaskState::Cancelling,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Cancelled,
    ]
    .iter()
    .map(TaskState::as_str)
    .collect();
    assert_eq!(
        names,
        ["running", "cancelling", "finished", "failed", "cancelled"]
    );
}

#[tokio::test]
async fn a_dropped_handle_ends_its_task_as_failed_or_cancelled() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let dropped = hub.start_task("s").unwrap();
    let id = dropped.id().to_owned();
    drop(dropped);
    let panicked = hub.start_task("s").unwrap();
    let panicked_id = panicked.id().to_owned();
    let outcome = std::thread::spawn(move || panicked.run(|| panic!("tool bug"))).join();
    assert!(outcome.is_err());
    let asked = hub.start_task("s").unwrap();
    let asked_id = asked.id().to_owned();
    asked.cancel();
    drop(asked);

    let tasks = hub.tasks("s").unwrap();
    let by_id = |id: &str| tasks.iter().find(|t| t.task() == id).unwrap().clone();
    assert_eq!(
        (by_id(&id).state(), by_id(&id).message()),
        (
            TaskState::Failed,
            Some("the task was dropped before it ended")
        )
    );
    assert_eq!(
        by_id(&panicked_id).message(),
        Some("the task's tool panicked")
    );
    assert_eq!(by_id(&asked_id).state(), TaskState::Cancelled);
}

#[tokio::test]
async fn cancel_answers_as_the_contract_says() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    // Idempotent while the tool runs.
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    assert!(task.is_cancelled());

    // Unknown session, another session's task, an unknown task, an invalid id.
    hub.open_session("other").await.unwrap();
    assert!(matches!(
        hub.cancel_task("nobody", &id).await,
        Err(CancelError::UnknownSession)
    ));
    assert!(matches!(
        hub.cancel_task("other", &id).await,
        Err(CancelError::UnknownTask)
    ));
    assert!(matches!(
        hub.cancel_task("s", "no-such-task").await,
        Err(CancelError::UnknownTask)
    ));
    for not_an_id in ["", "line\nbreak", &"x".repeat(300)] {
        assert!(matches!(
            hub.cancel_task("s", not_an_id).await,
            Err(CancelError::UnknownTask)
        ));
    }
    let invalid = hub.cancel_task("bad\nid", &id).await.unwrap_err();
    assert!(matches!(invalid, CancelError::InvalidSessionId(_)));
    assert!(invalid.is_not_found());

    assert_eq!(task.finish(), TaskState::Cancelled);
    hub.shutdown().await;
    assert!(matches!(
        hub.cancel_task("s", &id).await,
        Err(CancelError::UnknownSession)
    ));
    assert_eq!(hub.start_task("s").unwrap_err(), StartTaskError::ShutDown);
}

#[tokio::test]
async fn every_subscribe_and_resume_starts_with_the_tasks_then_the_history() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.publish(Some("s"), "1").unwrap();
    let done = hub.start_task("s").unwrap();
    let done_id = done.id().to_owned();
    hub.publish(Some("s"), "2").unwrap();
    done.finish();
    let running = hub.start_task("s").unwrap();
    let running_id = running.id().to_owned();
    hub.publish(Some("s"), "3").unwrap();

    let snapshot = [
        Item::T(done_id.clone(), TaskState::Finished, 2),
        Item::T(running_id.clone(), TaskState::Running, 2),
    ];
    let mut fresh = hub.subscribe("s", None);
    let mut expected = snapshot.to_vec();
    expected.extend([Item::S(1), Item::S(2), Item::S(3)]);
    assert_eq!(ready(&mut fresh), expected);

    // A resume gets the same states first, then only what it missed.
    let mut resumed = hub.subscribe("s", Some(2));
    let mut expected = snapshot.to_vec();
    expected.push(Item::S(3));
    assert_eq!(ready(&mut resumed), expected);

    // A resume past everything still gets the states.
    let mut caught_up = hub.subscribe("s", Some(3));
    assert_eq!(ready(&mut caught_up), snapshot.to_vec());

    // Sessions without tasks have no task updates at all.
    hub.publish(Some("plain"), "x").unwrap();
    assert_eq!(ready(&mut hub.subscribe("plain", None)), [Item::S(1)]);
    drop(running);
}

#[tokio::test]
async fn a_change_comes_after_the_statuses_before_it_even_for_a_reader_behind() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let mut live = hub.subscribe("s", None);
    let ctx = task.context().with_messenger(&messenger);

    ctx.run(|| {
        for i in 1..=100 {
            messenger.add_status_message(format!("step {i}"));
        }
    });
    // The reader has taken its first update and a few statuses only.
    assert_eq!(update(live.next().await).state(), TaskState::Running);
    for seq in 1..=5 {
        assert_eq!(live.next().await.and_then(|e| e.seq()), Some(seq));
    }
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    // Refused from now on, and counted.
    ctx.run(|| messenger.add_status_message("step 101"));
    assert_eq!(hub.stats().dropped_cancelled, 1);
    hub.publish(Some("s"), "not the task's").unwrap();
    task.finish();

    let rest = ready(&mut live);
    let mut expected: Vec<Item> = (6..=100).map(Item::S).collect();
    expected.push(Item::T(id.clone(), TaskState::Cancelling, 100));
    expected.push(Item::S(101));
    expected.push(Item::T(id, TaskState::Cancelled, 101));
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn refused_statuses_of_a_cancelled_task_say_why() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    let task = hub.start_task("s").unwrap();
    task.cancel();
    // Through a consumer of the messenger's whole statuses, refused as through `attach`.
    task.context()
        .with_messenger(&messenger)
        .run(|| messenger.add_status_message("too late"));
    let stream = messenger.stream().into_messages();
    let consumer = tokio::spawn({
        let hub = hub.clone();
        async move { hub.consume_messages(stream).await }
    });
    tokio::task::yield_now().await;
    while hub.stats().dropped_cancelled == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.stats().accepted, 0);
    assert_eq!(
        PublishError::TaskCancelled.to_string(),
        "its task was cancelled"
    );
    hub.shutdown().await;
    consumer.await.unwrap();
}

#[tokio::test]
async fn the_session_remembers_a_bounded_number_of_tasks_forgetting_ended_ones_first() {
    let hub = Hub::new(config(|c| c.task_capacity = 3)).unwrap();
    let ids = |hub: &Hub| -> Vec<String> {
        hub.tasks("s")
            .unwrap()
            .iter()
            .map(|t| t.task().to_owned())
            .collect()
    };
    let first = hub.start_task("s").unwrap();
    let first_id = first.id().to_owned();
    let second = hub.start_task("s").unwrap();
    let second_id = second.id().to_owned();
    let third = hub.start_task("s").unwrap();
    // Every remembered task still runs: refused.
    assert_eq!(
        hub.start_task("s").unwrap_err(),
        StartTaskError::TooManyTasks
    );
    assert_eq!(hub.stats().tasks, 3);

    // The second ends before the first, yet the first started of the ended ones goes, and
    // only when room is needed.
    second.finish();
    first.finish();
    assert_eq!(ids(&hub), [first_id.as_str(), &second_id, third.id()]);
    let fourth = hub.start_task("s").unwrap();
    assert_eq!(ids(&hub), [second_id.as_str(), third.id(), fourth.id()]);
    assert_eq!(hub.stats().tasks, 3);
    let fifth = hub.start_task("s").unwrap();
    assert_eq!(ids(&hub), [third.id(), fourth.id(), fifth.id()]);

    // A forgotten task is unknown, and a new subscriber hears nothing of it.
    assert!(matches!(
        hub.cancel_task("s", &first_id).await,
        Err(CancelError::UnknownTask)
    ));
    let told: Vec<Item> = ready(&mut hub.subscribe("s", None));
    assert_eq!(told.len(), 3);
    assert!(!told
        .iter()
        .any(|item| matches!(item, Item::T(id, ..) if *id == first_id || *id == second_id)));
    // Other sessions have their own room.
    assert!(hub.start_task("t").is_ok());
}

#[tokio::test]
async fn a_reader_that_missed_more_changes_than_kept_gets_the_current_states() {
    let hub = Hub::new(config(|c| c.task_capacity = 1)).unwrap();
    let mut behind = hub.subscribe("s", None);
    let mut last = String::new();
    for _ in 0..5 {
        let task = hub.start_task("s").unwrap();
        last = task.id().to_owned();
        task.finish();
    }
    // Ten changes, three kept: the reader gets the one remembered task's state instead.
    assert_eq!(ready(&mut behind), [Item::T(last, TaskState::Finished, 0)]);
    let task = hub.start_task("s").unwrap();
    assert_eq!(
        ready(&mut behind),
        [Item::T(task.id().to_owned(), TaskState::Running, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_expire_with_their_session_and_a_running_one_keeps_it() {
    let hub = Hub::new(config(|c| c.history_ttl = Duration::from_secs(60))).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();

    // Running, with no subscriber and no status: the session stays.
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(hub.evict_idle(), 0);
    assert!(hub.session_exists("s").await.unwrap());

    // Ended, it stays its time to live for a page that reloads, then goes with its tasks.
    assert_eq!(task.finish(), TaskState::Finished);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(hub.evict_idle(), 0);
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Finished
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(hub.evict_idle(), 1);
    let stats = hub.stats();
    assert_eq!((stats.sessions, stats.tasks), (0, 0));
    assert!(matches!(
        hub.cancel_task("s", &id).await,
        Err(CancelError::UnknownSession)
    ));
    assert!(hub.tasks("s").unwrap().is_empty());
}

#[tokio::test]
async fn closing_the_session_asks_its_tasks_to_stop() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let task = hub.start_task("s").unwrap();
    let stop = task.cancelled();
    assert!(hub.close_session("s").await.unwrap());
    assert!(task.is_cancelled());
    stop.await;
    // Its statuses no longer reach anyone, not even a new session of the same id.
    task.context()
        .with_messenger(&messenger)
        .run(|| messenger.add_status_message("after the close"));
    assert_eq!(hub.stats().dropped_cancelled, 1);
    assert_eq!(task.finish(), TaskState::Cancelled);
    assert_eq!(hub.stats().tasks, 0);

    // The same after shutdown.
    let task = hub.start_task("t").unwrap();
    hub.shutdown().await;
    assert!(task.is_cancelled());
}

#[tokio::test]
async fn statuses_of_a_task_sent_to_another_session_are_that_sessions_alone() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let task = hub.start_task("a").unwrap();
    task.context().with_messenger(&messenger).run(|| {
        // Only the session changes: the task stays current.
        CURRENT_WEBSOCKET_SESSION_ID.sync_scope(Some("b".to_owned()), || {
            messenger.add_status_message("to b");
        });
    });
    let Some(Event::Status(status)) = hub.subscribe("b", None).next().await else {
        panic!("no status in b");
    };
    assert_eq!((status.text(), status.task()), ("to b", None));
    task.finish();
}

#[tokio::test]
async fn a_task_takes_the_messenger_of_the_code_that_started_it() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    // Started where the server's messenger is the scoped default, run on a plain blocking
    // thread that has none.
    let task = status_messenger::with_default(&messenger, || hub.start_task("s").unwrap());
    tokio::task::spawn_blocking(move || {
        task.run(|| status_messenger::add_status_message("from the pool"))
    })
    .await
    .unwrap();
    assert_eq!(hub.stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_running_task_is_told_cancelling_before_the_streams_end() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let mut sub = hub.subscribe("s", None);
    let task = status_messenger::with_default(&messenger, || hub.start_task("s")).unwrap();
    let id = task.id().to_owned();
    let ctx = task.context().with_messenger(&messenger);
    // A tool that runs until it is asked to stop.
    let tool = std::thread::spawn(move || {
        ctx.run(|| {
            status_messenger::add_status_message("working");
            status_messenger::sleep_unless_cancelled(Duration::from_secs(60))
        })
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(item(sub.next().await.unwrap()));
    }
    hub.shutdown().await;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the stream ends")
    {
        seen.push(item(event));
    }
    assert_eq!(
        seen[..3],
        [
            Item::T(id.clone(), TaskState::Running, 0),
            Item::S(1),
            Item::T(id.clone(), TaskState::Cancelling, 1),
        ]
    );
    // The tool was woken at once; its `cancelled` may come before the end or not at all.
    assert!(tool.join().unwrap(), "the tool's wait was cut short");
    assert!(seen.len() <= 4, "{seen:?}");
    drop(task);
}
