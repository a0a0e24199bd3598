//! Two hubs in one process, each attached to its own messenger: tool code that calls the free
//! `add_status_message` under one messenger's scoped default reaches that messenger's hub and
//! no other, from blocking threads, plain threads and spawned tasks alike.
//!
//! Nothing here touches the global messenger; `scoped_defaults_global.rs` does, in its own
//! process.

use futures_util::{FutureExt, StreamExt};
use status_messenger::{
    add_status_message, set_default, with_default, with_session_id, Event, Hub, HubConfig,
    Messenger, SessionContext, WithMessenger, WithSession,
};

const STEPS: usize = 5;
const SESSIONS: usize = 3;

/// A hub with its own messenger attached, as one server in a process would have.
struct Server {
    name: &'static str,
    hub: Hub,
    messenger: Messenger,
}

impl Server {
    fn new(name: &'static str) -> Self {
        let hub = Hub::new(HubConfig::default()).unwrap();
        let messenger = Messenger::new();
        hub.attach(&messenger).unwrap();
        Self {
            name,
            hub,
            messenger,
        }
    }

    fn session(&self, n: usize) -> String {
        format!("{}-{n}", self.name)
    }
}

/// Synchronous tool code: it knows neither the session nor the messenger.
fn tool() {
    for step in 0..STEPS {
        add_status_message(format!("step {step}"));
    }
}

/// The sequence numbers of what `hub` holds for `session`; fails on anything but a status of
/// that session.
fn seqs(hub: &Hub, session: &str) -> Vec<u64> {
    let mut subscription = hub.subscribe(session, None);
    let mut seqs = Vec::new();
    while let Some(Some(event)) = subscription.next().now_or_never() {
        assert_eq!(event.session(), session);
        assert!(matches!(event, Event::Status(_)), "unexpected {event:?}");
        seqs.push(event.seq().unwrap());
    }
    seqs
}

/// Each server's hub holds `STEPS` statuses, in order, for each of its own sessions, and
/// nothing for the other server's.
fn assert_each_hub_has_only_its_own(servers: &[Server]) {
    for server in servers {
        assert_eq!(
            server.hub.stats().accepted,
            (SESSIONS * STEPS) as u64,
            "{} accepted",
            server.name
        );
        for other in servers {
            for n in 0..SESSIONS {
                let seqs = seqs(&server.hub, &other.session(n));
                if std::ptr::eq(server, other) {
                    assert_eq!(seqs.len(), STEPS, "{} in {}", other.session(n), server.name);
                    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
                } else {
                    assert!(
                        seqs.is_empty(),
                        "{} leaked into {}",
                        other.session(n),
                        server.name
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_blocking_reaches_the_hub_of_the_callers_messenger() {
    let servers = [Server::new("one"), Server::new("two")];
    let mut requests = Vec::new();
    for server in &servers {
        for n in 0..SESSIONS {
            // A request handler: the server's messenger and the client's session around it.
            let handler = with_session_id(server.session(n), async {
                status_messenger::spawn_blocking(tool).await.unwrap();
            });
            requests.push(tokio::spawn(server.messenger.scope(handler)));
        }
    }
    for request in requests {
        request.await.unwrap();
    }
    assert_each_hub_has_only_its_own(&servers);
}

#[test]
fn a_thread_with_a_carried_context_reaches_the_hub_of_the_callers_messenger() {
    let servers = [Server::new("one"), Server::new("two")];
    let threads: Vec<_> = servers
        .iter()
        .flat_map(|server| {
            (0..SESSIONS).map(|n| {
                let ctx = with_default(&server.messenger, || {
                    SessionContext::new(server.session(n)).run(SessionContext::current)
                });
                assert!(ctx.messenger().unwrap().same_channel(&server.messenger));
                std::thread::spawn(move || ctx.run(tool))
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_each_hub_has_only_its_own(&servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_reach_the_hub_of_the_callers_messenger_across_awaits() {
    let servers = [Server::new("one"), Server::new("two")];
    let mut requests = Vec::new();
    for server in &servers {
        for n in 0..SESSIONS {
            let handler = with_session_id(server.session(n), async {
                // Two levels of tasks, each yielding between statuses so that the two servers'
                // tasks interleave on the same worker threads.
                let outer = status_messenger::spawn(async {
                    let inner = status_messenger::spawn(async {
                        for step in 0..STEPS - 1 {
                            add_status_message(format!("step {step}"));
                            tokio::task::yield_now().await;
                        }
                    });
                    inner.await.unwrap();
                    add_status_message("last step");
                });
                outer.await.unwrap();
            });
            requests.push(tokio::spawn(server.messenger.scope(handler)));
        }
    }
    for request in requests {
        request.await.unwrap();
    }
    assert_each_hub_has_only_its_own(&servers);
}

#[test]
fn a_set_default_guard_restores_the_previous_default_on_drop() {
    let servers = [Server::new("one"), Server::new("two")];
    let send = |session: &str| SessionContext::new(session).run(|| add_status_message("x"));

    let outer = set_default(&servers[0].messenger);
    send("one-0");
    {
        let _inner = set_default(&servers[1].messenger);
        send("two-0");
        // with_default nests inside a guard and gives the guard's default back.
        with_default(&servers[0].messenger, || send("one-0"));
        send("two-0");
    }
    send("one-0");
    drop(outer);

    assert_eq!(seqs(&servers[0].hub, "one-0").len(), 3);
    assert_eq!(seqs(&servers[1].hub, "two-0").len(), 2);
    assert_eq!(servers[0].hub.stats().accepted, 3);
    assert_eq!(servers[1].hub.stats().accepted, 2);
}

#[test]
fn guards_dropped_out_of_order_leave_a_usable_default() {
    let (base, first, second) = (Messenger::new(), Messenger::new(), Messenger::new());
    let base_guard = set_default(&base);
    let a = set_default(&first);
    let b = set_default(&second);
    // Out of order: each guard puts back the default it replaced, as tracing's do.
    drop(a);
    drop(b);
    add_status_message("to the default b replaced");
    assert_eq!(first.stream().pending(), 1);

    // Defaults keep nesting and restoring from there.
    with_default(&second, || add_status_message("to second"));
    add_status_message("to first again");
    assert_eq!(first.stream().pending(), 2);
    assert_eq!(second.stream().pending(), 1);

    // The first guard of the thread puts back "no scoped default".
    drop(base_guard);
    assert!(SessionContext::current().messenger().is_none());
    assert_eq!(base.stream().pending(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn scoped_futures_keep_their_own_messenger_between_polls() {
    let (first, second) = (Messenger::new(), Messenger::new());
    let task = |messenger: &Messenger, name: &'static str| {
        messenger.scope(async move {
            for step in 0..3 {
                add_status_message(format!("{name} {step}"));
                // The other task runs on this thread in between.
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::join!(task(&first, "first"), task(&second, "second"));

    let texts = |messenger: &Messenger| {
        let mut stream = messenger.stream();
        std::iter::from_fn(move || stream.next().now_or_never().flatten().map(|(_, text)| text))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&first), ["first 0", "first 1", "first 2"]);
    assert_eq!(texts(&second), ["second 0", "second 1", "second 2"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_context_without_a_messenger_leaves_the_default_alone() {
    let messenger = Messenger::new();
    with_default(&messenger, || {
        SessionContext::new("s").run(|| add_status_message("sync"));
    });
    messenger
        .scope(SessionContext::none().wrap(async { add_status_message("async") }))
        .await;
    assert_eq!(messenger.stream().pending(), 2);
}

fn require_send<T: Send>(_: &T) {}

#[test]
fn scoped_futures_are_send_when_the_inner_future_is() {
    let messenger = Messenger::new();
    let scoped: WithMessenger<_> = messenger.scope(async {});
    require_send(&scoped);
    let ctx = with_default(&messenger, SessionContext::current);
    require_send(&ctx);
    let wrapped: WithSession<WithMessenger<_>> = ctx.wrap(async {});
    require_send(&wrapped);
}
