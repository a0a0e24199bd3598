//! The tracing bridge: only marked events become statuses (not those whose marker field is
//! `false`), only inside a session, with their fields as data and their level carried over.

use futures_util::{FutureExt, StreamExt};
use status_messenger::tracing_layer::StatusLayer;
use status_messenger::{
    Event, Hub, HubConfig, JsonData, Level, Messenger, SessionContext, Status, TaskState,
};
use tracing_subscriber::layer::SubscriberExt;

/// A hub fed by a messenger that the layer sends to, as the current messenger.
fn setup() -> (Hub, Messenger) {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    (hub, messenger)
}

fn statuses(hub: &Hub, session: &str) -> Vec<Status> {
    let mut sub = hub.subscribe(session, None);
    let mut out = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        if let Event::Status(status) = event {
            out.push(status);
        }
    }
    out
}

fn data(status: &Status) -> Option<&str> {
    status.data().map(JsonData::as_str)
}

#[test]
fn only_marked_events_inside_a_session_become_statuses() {
    let (hub, messenger) = setup();
    let subscriber = tracing_subscriber::registry().with(StatusLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "status", "outside any session");
        SessionContext::new("s").with_messenger(&messenger).run(|| {
            tracing::info!(target: "status", "by target");
            tracing::info!(target: "status::search", "by a target below it");
            tracing::info!(status = true, "by field");
            tracing::info!(status = "yes", "by a field of another value");
            tracing::info!(status = false, "a field that says it is not one");
            tracing::info!(target: "status", status = false, "by target, whatever the field");
            tracing::info!(target: "statuses", "a target that only starts alike");
            tracing::info!("unmarked");
            tracing::error!(pages = 3, "unmarked with fields");
            tracing::info!(target: "status_messenger", status = true, "the crate's own");
        });
    });
    let texts: Vec<_> = statuses(&hub, "s")
        .iter()
        .map(|status| status.text().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "by target",
            "by a target below it",
            "by field",
            "by a field of another value",
            "by target, whatever the field",
        ]
    );
    assert_eq!(hub.stats().accepted, 5);
}

#[test]
fn fields_become_data_and_the_level_is_carried_over() {
    let (hub, messenger) = setup();
    let subscriber = tracing_subscriber::registry().with(StatusLayer::new());
    #[derive(Debug)]
    struct Source {
        #[allow(dead_code)]
        name: &'static str,
    }
    let error = std::io::Error::other("connection reset");
    tracing::subscriber::with_default(subscriber, || {
        SessionContext::new("s").with_messenger(&messenger).run(|| {
            tracing::error!(
                target: "status",
                pages = 3_u64,
                delta = -2_i64,
                ratio = 0.5,
                done = false,
                url = "https://example.com/\"q\"",
                shown = %"display",
                source = ?Source { name: "web" },
                cause = &error as &(dyn std::error::Error + 'static),
                "Reading {} pages",
                3
            );
            tracing::warn!(status = true, "no fields but the marker");
            tracing::info!(target: "status", "info");
            tracing::debug!(target: "status", "debug");
            tracing::trace!(target: "status", nan = f64::NAN, "trace");
        });
    });
    let got = statuses(&hub, "s");
    assert_eq!(got.len(), 5);
    assert_eq!(
        (got[0].text(), got[0].level()),
        ("Reading 3 pages", Some(Level::Error))
    );
    assert_eq!(
        data(&got[0]),
        Some(
            r#"{"pages":3,"delta":-2,"ratio":0.5,"done":false,"url":"https://example.com/\"q\"","shown":"display","source":"Source { name: \"web\" }","cause":"connection reset"}"#
        )
    );
    assert_eq!((got[1].level(), data(&got[1])), (Some(Level::Warn), None));
    let levels: Vec<_> = got[2..].iter().map(Status::level).collect();
    assert_eq!(levels, [Some(Level::Info); 3]);
    // JSON has no NaN.
    assert_eq!(data(&got[4]), Some(r#"{"nan":null}"#));
}

#[test]
fn the_marker_and_the_messenger_can_be_chosen() {
    let (hub, messenger) = setup();
    let layer = StatusLayer::new()
        .target("agent::progress")
        .field("user_visible")
        .with_messenger(&messenger);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        // No scoped messenger: the layer's own is used.
        SessionContext::new("s").run(|| {
            tracing::info!(target: "agent::progress", "by the chosen target");
            tracing::info!(user_visible = 1, n = 2, "by the chosen field");
            tracing::info!(target: "status", status = true, "the defaults no longer mark");
        });
    });
    let got = statuses(&hub, "s");
    let texts: Vec<_> = got.iter().map(Status::text).collect();
    assert_eq!(texts, ["by the chosen target", "by the chosen field"]);
    assert_eq!(data(&got[1]), Some(r#"{"n":2}"#));
}

#[test]
fn events_in_a_task_carry_the_task() {
    let (hub, messenger) = setup();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    let subscriber = tracing_subscriber::registry().with(StatusLayer::new());
    let ctx = task.context().with_messenger(&messenger);
    tracing::subscriber::with_default(subscriber, || {
        ctx.run(|| tracing::info!(target: "status", step = 1, "working"));
    });
    assert_eq!(task.finish(), TaskState::Finished);
    let got = statuses(&hub, "s");
    assert_eq!(
        (got[0].task(), data(&got[0])),
        (Some(id.as_str()), Some(r#"{"step":1}"#))
    );
}
