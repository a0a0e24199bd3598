//! The running-task caps: one session that fills its own cap cannot starve another, the hub's
//! cap refuses with a clear error, and the endpoints' answer to each is 429 or 503 with
//! `Retry-After`.

use std::time::Duration;

use futures_util::StreamExt;
use status_messenger::hub::StartTaskError;
use status_messenger::web::Refusal;
use status_messenger::{add_status_message, Event, Hub, HubConfig};

/// Starts `n` tasks of `session` whose tools wait for `release`, each on a blocking thread.
fn hold_tasks(
    hub: &Hub,
    session: &str,
    n: usize,
    release: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let task = hub.start_task(session).expect("a task under the cap");
            let mut release = release.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                task.run(|| {
                    let _ = runtime.block_on(release.wait_for(|go| *go));
                })
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_at_its_cap_does_not_starve_another() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach_global().unwrap();
    let per_session = hub.config().max_running_tasks_per_session;
    assert_eq!(per_session, 8);
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let held = hold_tasks(&hub, "greedy", per_session, &release);

    // One more in the same session is refused, clearly, and changes nothing.
    let refused = hub.start_task("greedy").unwrap_err();
    assert_eq!(refused, StartTaskError::SessionBusy);
    let refusal = Refusal::from_start_task(&refused);
    assert_eq!(refusal.status(), 429);
    assert_eq!(refusal.retry_after(), Some(1));
    assert_eq!(hub.tasks("greedy").unwrap().len(), per_session);

    // Another session's task still runs and its statuses arrive.
    let mut page = hub.subscribe("modest", None);
    let task = hub
        .start_task("modest")
        .expect("another session is not capped");
    let tool = tokio::task::spawn_blocking(move || task.run(|| add_status_message("step 1/1")));
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match page.next().await {
                Some(Event::Status(status)) => return status,
                Some(_) => continue,
                None => panic!("the stream ended"),
            }
        }
    })
    .await
    .expect("the other session's status arrives while the first is at its cap");
    assert_eq!(status.text(), "step 1/1");
    tool.await.unwrap();

    // Once one ends, the session has room again.
    release_tx.send(true).unwrap();
    for handle in held {
        handle.await.unwrap();
    }
    assert!(hub.start_task("greedy").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_cap_refuses_with_503() {
    let mut config = HubConfig::default();
    config.max_running_tasks = 3;
    let hub = Hub::new(config).unwrap();
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let mut held = hold_tasks(&hub, "a", 2, &release);
    held.extend(hold_tasks(&hub, "b", 1, &release));

    let refused = hub.start_task("c").unwrap_err();
    assert_eq!(refused, StartTaskError::HubBusy);
    let refusal = Refusal::from_start_task(&refused);
    assert_eq!((refusal.status(), refusal.retry_after()), (503, Some(1)));
    let body: serde_json::Value = serde_json::from_str(&refusal.body()).unwrap();
    assert_eq!(body["error"], "too many tasks are running at once");
    // A refused task is not remembered.
    assert!(hub.tasks("c").unwrap().is_empty());

    release_tx.send(true).unwrap();
    for handle in held {
        handle.await.unwrap();
    }
    // Ended tasks give their places back, whichever way they ended.
    let dropped = hub.start_task("c").unwrap();
    drop(dropped);
    let tasks: Vec<_> = (0..3).map(|_| hub.start_task("d").unwrap()).collect();
    assert_eq!(hub.start_task("e").unwrap_err(), StartTaskError::HubBusy);
    drop(tasks);
    assert!(hub.start_task("e").is_ok());
}

#[test]
fn zero_caps_are_refused_by_the_config() {
    let mut config = HubConfig::default();
    config.max_running_tasks_per_session = 0;
    assert_eq!(
        config.validate().unwrap_err().field(),
        "max_running_tasks_per_session"
    );
    let mut config = HubConfig::default();
    config.max_running_tasks = 0;
    assert_eq!(config.validate().unwrap_err().field(), "max_running_tasks");
}
