//! Cancel reaching tool code: through each carrier of the context (the crate's
//! `spawn_blocking`, a `std::thread` with a `SessionContext`, an async task through the crate's
//! `spawn`, actix-web's `web::block`), before the tool's next step; the statuses after it
//! refused and never delivered after the task's `cancelling` update; a cancel that comes before
//! the tool has taken the task up; and subscriptions that end without cancelling anything.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use status_messenger::{
    add_status_message, cancelled, is_cancelled, Event, Hub, HubConfig, Messenger, SessionContext,
    Subscription, TaskState,
};

const STEPS: u32 = 10_000;
const STEP: Duration = Duration::from_millis(5);

/// The simulated tool: asks before each step, then reports it; returns the steps done.
fn tool() -> u32 {
    for step in 1..=STEPS {
        if is_cancelled() {
            return step - 1;
        }
        add_status_message(format!("step {step}"));
        std::thread::sleep(STEP);
    }
    STEPS
}

/// The same tool, async: waits on the cancel beside its sleep.
async fn async_tool() -> u32 {
    for step in 1..=STEPS {
        if is_cancelled() {
            return step - 1;
        }
        add_status_message(format!("step {step}"));
        tokio::select! {
            () = cancelled() => return step,
            () = tokio::time::sleep(STEP) => {}
        }
    }
    STEPS
}

fn hub_with_messenger() -> (Hub, Messenger) {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    (hub, messenger)
}

/// Reads until the task has reported `steps` statuses; the task's first update comes first.
async fn wait_for_steps(sub: &mut Subscription, task: &str, steps: u64) {
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        let mut seen = 0;
        while seen < steps {
            match sub.next().await.expect("stream ended") {
                Event::Status(status) => {
                    assert_eq!(status.task(), Some(task));
                    seen = status.seq();
                }
                Event::Task(update) => assert_eq!(update.state(), TaskState::Running),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the tool did not report in time");
}

/// Reads what follows, up to the task's final update; checks that no status of the task comes
/// after its `cancelling` update and that its numbers end at that update's `last_seq`.
async fn check_stopped(sub: &mut Subscription, task: &str, steps_done: u32) {
    let deadline = Duration::from_secs(10);
    let mut cancelling_at = None;
    let mut last_step = sub.last_seq();
    tokio::time::timeout(deadline, async {
        loop {
            match sub.next().await.expect("stream ended") {
                Event::Status(status) => {
                    assert_eq!(status.task(), Some(task));
                    assert!(
                        cancelling_at.is_none(),
                        "status {} after the cancelling update",
                        status.seq()
                    );
                    last_step = status.seq();
                }
                Event::Task(update) => match update.state() {
                    TaskState::Cancelling => cancelling_at = Some(update.last_seq()),
                    TaskState::Cancelled => {
                        assert_eq!(Some(update.last_seq()), cancelling_at);
                        break;
                    }
                    other => panic!("unexpected state {other}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("no cancelled update in time");
    assert_eq!(cancelling_at, Some(last_step));
    // The tool stopped before its next step: every step it did is delivered, at most one
    // more was tried and refused.
    assert!(
        u64::from(steps_done) == last_step || u64::from(steps_done) == last_step + 1,
        "{steps_done} steps done, {last_step} delivered"
    );
    assert!(steps_done < STEPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_a_tool_in_the_crates_spawn_blocking() {
    let (hub, messenger) = hub_with_messenger();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let mut page = hub.subscribe("s", None);
    // The request handler runs in the task; the crate's spawn_blocking carries it on.
    let handler = tokio::spawn(
        messenger.scope(task.wrap(async { status_messenger::spawn_blocking(tool).await.unwrap() })),
    );
    wait_for_steps(&mut page, &id, 3).await;
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    let done = handler.await.unwrap();
    check_stopped(&mut page, &id, done).await;
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_a_tool_on_a_std_thread_with_a_captured_context() {
    let (hub, messenger) = hub_with_messenger();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let mut page = hub.subscribe("s", None);
    let ctx: SessionContext = task.context().with_messenger(&messenger);
    let thread = std::thread::spawn(move || ctx.run(tool));
    wait_for_steps(&mut page, &id, 3).await;
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    let done = tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    // The thread had only the context; the handle records the end.
    assert_eq!(task.finish(), TaskState::Cancelled);
    check_stopped(&mut page, &id, done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_an_async_tool_in_the_crates_spawn() {
    let (hub, messenger) = hub_with_messenger();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let mut page = hub.subscribe("s", None);
    let handler = tokio::spawn(
        messenger.scope(task.wrap(async { status_messenger::spawn(async_tool()).await.unwrap() })),
    );
    wait_for_steps(&mut page, &id, 3).await;
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );
    let done = handler.await.unwrap();
    check_stopped(&mut page, &id, done).await;
}

#[test]
fn reaches_a_tool_in_actix_web_block_with_a_captured_context() {
    actix_web::rt::System::new().block_on(async {
        let (hub, messenger) = hub_with_messenger();
        let task = hub.start_task("s").unwrap();
        let id = task.id().to_owned();
        let mut page = hub.subscribe("s", None);
        // What an actix handler does: capture the context where the task is current.
        let ctx = task
            .context()
            .with_messenger(&messenger)
            .run(SessionContext::current);
        assert_eq!(ctx.task_id(), Some(id.as_str()));
        let tool_call = actix_web::rt::spawn(actix_web::web::block(move || ctx.run(tool)));
        wait_for_steps(&mut page, &id, 3).await;
        assert_eq!(
            hub.cancel_task("s", &id).await.unwrap(),
            TaskState::Cancelling
        );
        let done = tool_call.await.unwrap().unwrap();
        assert_eq!(task.finish(), TaskState::Cancelled);
        check_stopped(&mut page, &id, done).await;
    });
}

#[tokio::test]
async fn a_cancel_before_the_tool_took_the_task_up_is_applied_when_it_does() {
    let (hub, messenger) = hub_with_messenger();
    // Started and told to the client, its tool not yet running (queued, say).
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelling
    );

    let ctx_messenger = messenger.clone();
    let done = tokio::task::spawn_blocking(move || {
        status_messenger::with_default(&ctx_messenger, || task.run(tool))
    })
    .await
    .unwrap();
    assert_eq!(done, 0);
    let mut page = hub.subscribe("s", None);
    match page.next().await {
        Some(Event::Task(update)) => assert_eq!(update.state(), TaskState::Cancelled),
        other => panic!("expected the task's state, got {other:?}"),
    }
    assert!(page.next().now_or_never().is_none());
    assert_eq!(hub.stats().accepted, 0);
}

#[tokio::test]
async fn statuses_after_the_cancel_are_refused_counted_and_never_delivered() {
    let (hub, messenger) = hub_with_messenger();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let mut page = hub.subscribe("s", None);
    let ctx = task.context().with_messenger(&messenger);
    ctx.run(|| add_status_message("before"));
    task.cancel();
    // A tool that does not ask goes on reporting; none of it reaches anyone.
    ctx.run(|| {
        for i in 0..3 {
            add_status_message(format!("after {i}"));
            status_messenger::add_status(
                status_messenger::StatusMessage::new("with fields").progress(i, 3),
            );
        }
    });
    assert_eq!(task.finish(), TaskState::Cancelled);
    let stats = hub.stats();
    assert_eq!((stats.accepted, stats.dropped_cancelled), (1, 6));
    assert_eq!(stats.dropped(), 6);

    let mut kinds = Vec::new();
    while let Some(Some(event)) = page.next().now_or_never() {
        kinds.push(match event {
            Event::Status(status) => format!("status {}", status.text()),
            Event::Task(update) => format!("{} at {}", update.state(), update.last_seq()),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        kinds,
        [
            "running at 0",
            "status before",
            "cancelling at 1",
            "cancelled at 1"
        ]
    );
    // A page that reloads sees the same: the state, then the history.
    let mut reloaded = hub.subscribe("s", None);
    match reloaded.next().await {
        Some(Event::Task(update)) => {
            assert_eq!(
                (update.task(), update.state()),
                (id.as_str(), TaskState::Cancelled)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_streams_and_reloading_never_cancel() {
    let (hub, messenger) = hub_with_messenger();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let ctx = task.context().with_messenger(&messenger);
    let thread = std::thread::spawn(move || {
        ctx.run(|| {
            for step in 1..=20 {
                if is_cancelled() {
                    return step - 1;
                }
                add_status_message(format!("step {step}"));
                std::thread::sleep(Duration::from_millis(2));
            }
            20
        })
    });
    // Two tabs, both closed mid-task, one reloaded after what it saw.
    let mut first = hub.subscribe("s", None);
    let second = hub.subscribe("s", None);
    wait_for_steps(&mut first, &id, 2).await;
    let seen = first.last_seq();
    drop(first);
    drop(second);
    let mut reloaded = hub.subscribe("s", Some(seen));
    let steps = tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    assert_eq!(steps, 20);
    assert!(!task.is_cancelled());
    assert_eq!(task.finish(), TaskState::Finished);
    match reloaded.next().await {
        Some(Event::Task(update)) => assert_eq!(update.state(), TaskState::Running),
        other => panic!("unexpected {other:?}"),
    }
    let mut last = seen;
    while let Some(Some(event)) = reloaded.next().now_or_never() {
        match event {
            Event::Status(status) => {
                assert_eq!(status.seq(), last + 1);
                last = status.seq();
            }
            Event::Task(update) => {
                assert_eq!(
                    (update.state(), update.last_seq()),
                    (TaskState::Finished, 20)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last, 20);
}

#[tokio::test]
async fn the_cancelled_future_completes_for_a_waiting_tool_and_never_outside_a_task() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let waiting = tokio::spawn(task.wrap(async {
        cancelled().await;
        is_cancelled()
    }));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    hub.cancel_task("s", &id).await.unwrap();
    assert!(waiting.await.unwrap());
    assert_eq!(
        hub.cancel_task("s", &id).await.unwrap(),
        TaskState::Cancelled
    );

    let outside = cancelled();
    assert!(tokio::time::timeout(Duration::from_millis(20), outside)
        .await
        .is_err());
}

/// `sleep_unless_cancelled` ends a blocking tool's wait as the cancel comes: for every thread
/// of the task asleep in it (on the crate's `spawn_blocking` and on a `std::thread` carrying
/// the task's context), whatever the length of the wait (an hour, or `Duration::MAX`, which
/// has no deadline at all); a cancel that came first ends it at once; without a cancel the
/// whole wait passes; outside any task it is a plain sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_unless_cancelled_wakes_every_sleeper_of_the_task_at_the_cancel() {
    use status_messenger::sleep_unless_cancelled;
    use std::time::Instant;
    let hub = Hub::new(HubConfig::default()).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let context = task.context();
    let started = Instant::now();
    // Each sleeper says so just before it sleeps; the cancel comes well after the last.
    let (about_to_sleep, mut ready) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut sleepers = Vec::new();
    for wait in [Duration::from_secs(3600), Duration::MAX] {
        let context = context.clone();
        let about_to_sleep = about_to_sleep.clone();
        sleepers.push(tokio::task::spawn_blocking(move || {
            about_to_sleep.send(()).unwrap();
            context.run(|| sleep_unless_cancelled(wait))
        }));
    }
    let on_thread = {
        let context = context.clone();
        std::thread::spawn(move || {
            about_to_sleep.send(()).unwrap();
            context.run(|| sleep_unless_cancelled(Duration::from_secs(3600)))
        })
    };
    for _ in 0..3 {
        ready.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sleepers.iter().all(|sleeper| !sleeper.is_finished()));
    hub.cancel_task("s", &id).await.unwrap();
    for sleeper in sleepers {
        assert!(sleeper.await.unwrap(), "woken as cancelled");
    }
    assert!(on_thread.join().unwrap(), "woken as cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // Cancelled already: at once.
    let again = Instant::now();
    assert!(context.run(|| sleep_unless_cancelled(Duration::from_secs(3600))));
    assert!(again.elapsed() < Duration::from_secs(1));

    // No cancel: the whole wait, then `false`; and the same outside any task.
    let other = hub.start_task("s").unwrap();
    let wait = Duration::from_millis(50);
    for run in [other.context(), SessionContext::current()] {
        let slept = Instant::now();
        assert!(!run.run(|| sleep_unless_cancelled(wait)));
        assert!(slept.elapsed() >= wait);
    }
    drop(task);
    drop(other);
}
