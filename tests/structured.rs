//! Structured statuses: progress, level, key and data carried from the messenger through the
//! hub to subscribers, kept in history and on resume, bounded, and invisible to whoever reads
//! text only.

use futures_util::{FutureExt, StreamExt};
use status_messenger::hub::MAX_KEY_BYTES;
use status_messenger::{
    add_status, add_status_message, Event, Hub, HubConfig, JsonData, Level, Messenger, Progress,
    SessionContext, Status, StatusMessage,
};

fn full() -> StatusMessage {
    StatusMessage::new("Reading page 3 of 10")
        .progress(3, 10)
        .level(Level::Warn)
        .key("reading")
        .data(
            JsonData::new(r#"{ "url": "https://example.com/a b", "pages": [1, 2.5, null] }"#)
                .unwrap(),
        )
}

fn check_full(status: &Status) {
    assert_eq!(status.text(), "Reading page 3 of 10");
    assert_eq!(status.progress(), Some(Progress::new(3, 10)));
    assert_eq!(status.level(), Some(Level::Warn));
    assert_eq!(status.key(), Some("reading"));
    assert_eq!(
        status.data().map(JsonData::as_str),
        Some(r#"{"url":"https://example.com/a b","pages":[1,2.5,null]}"#)
    );
}

fn statuses(events: impl IntoIterator<Item = Event>) -> Vec<Status> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Status(status) => Some(status),
            _ => None,
        })
        .collect()
}

fn ready(sub: &mut status_messenger::Subscription) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn fields_go_from_the_messenger_to_subscribers_and_survive_a_resume() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let mut live = hub.subscribe("s", None);
    SessionContext::new("s").with_messenger(&messenger).run(|| {
        add_status_message("plain");
        add_status(full());
        add_status(StatusMessage::new("only a level").level(Level::Error));
    });

    let got = statuses(ready(&mut live));
    assert_eq!(got.len(), 3);
    let plain = &got[0];
    assert_eq!(
        (plain.text(), plain.task(), plain.progress(), plain.level()),
        ("plain", None, None, None)
    );
    assert_eq!((plain.key(), plain.data()), (None, None));
    check_full(&got[1]);
    assert_eq!(
        (got[2].level(), got[2].progress(), got[2].key()),
        (Some(Level::Error), None, None)
    );

    // From history, on a late subscribe and on a resume.
    let replayed = statuses(ready(&mut hub.subscribe("s", None)));
    check_full(&replayed[1]);
    assert_eq!(replayed, got);
    let resumed = statuses(ready(&mut hub.subscribe("s", Some(1))));
    check_full(&resumed[0]);
    assert_eq!(resumed.len(), 2);
}

#[tokio::test]
async fn fields_go_through_a_consumer_of_whole_statuses_and_publish_message() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    let consumer = tokio::spawn({
        let (hub, updates) = (hub.clone(), messenger.stream().into_messages());
        async move { hub.consume_messages(updates).await }
    });
    SessionContext::new("s").run(|| messenger.add_status(full()));
    let mut sub = hub.subscribe("s", None);
    let Some(Event::Status(status)) = sub.next().await else {
        panic!("no status")
    };
    check_full(&status);

    hub.publish_message(Some("s"), full()).unwrap();
    let Some(Event::Status(status)) = sub.next().await else {
        panic!("no status")
    };
    check_full(&status);
    hub.shutdown().await;
    consumer.await.unwrap();
}

#[tokio::test]
async fn statuses_carry_their_task_id_inside_a_task_only() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let task = hub.start_task("s").unwrap();
    let id = task.id().to_owned();
    task.context().with_messenger(&messenger).run(|| {
        add_status_message("in the task");
        add_status(StatusMessage::new("with progress").progress(1, 2));
    });
    SessionContext::new("s")
        .with_messenger(&messenger)
        .run(|| add_status_message("outside"));
    task.finish();
    let got = statuses(ready(&mut hub.subscribe("s", None)));
    let tasks: Vec<_> = got.iter().map(Status::task).collect();
    assert_eq!(tasks, [Some(id.as_str()), Some(id.as_str()), None]);
    assert_eq!(got[1].progress(), Some(Progress::new(1, 2)));
}

#[tokio::test]
async fn readers_of_text_see_the_text_only() {
    let messenger = Messenger::new();
    SessionContext::new("s").run(|| {
        messenger.add_status(full());
        messenger.add_status_message("plain");
    });
    let texts: Vec<_> = messenger.stream().take(2).collect().await;
    assert_eq!(
        texts,
        [
            (Some("s".to_owned()), "Reading page 3 of 10".to_owned()),
            (Some("s".to_owned()), "plain".to_owned()),
        ]
    );
    // A hub fed texts keeps none of the fields either, and says nothing new.
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.consume(futures_util::stream::iter([(
        Some("s".to_owned()),
        "text".to_owned(),
    )]))
    .await;
    let events = ready(&mut hub.subscribe("s", None));
    assert_eq!(events.len(), 1);
    let status = &statuses(events)[0];
    assert_eq!(
        (status.task(), status.progress(), status.data()),
        (None, None, None)
    );
}

#[tokio::test]
async fn fields_are_bounded_like_the_text() {
    let mut config = HubConfig::default();
    config.max_status_bytes = 64;
    let hub = Hub::new(config).unwrap();
    let long_key = format!("{}é", "k".repeat(MAX_KEY_BYTES - 1));
    let long_data = JsonData::new(&format!("\"{}\"", "d".repeat(100))).unwrap();
    hub.publish_message(
        Some("s"),
        StatusMessage::new("kept").key(long_key).data(long_data),
    )
    .unwrap();
    hub.publish_message(
        Some("s"),
        StatusMessage::new("small").data(JsonData::new("[1]").unwrap()),
    )
    .unwrap();
    let got = statuses(ready(&mut hub.subscribe("s", None)));
    // Cut at a char boundary (the two-byte 'é' does not fit), data left out, text kept.
    assert_eq!(got[0].key().map(str::len), Some(MAX_KEY_BYTES - 1));
    assert_eq!((got[0].text(), got[0].data()), ("kept", None));
    assert_eq!(got[1].data().map(JsonData::as_str), Some("[1]"));
    assert_eq!(hub.stats().truncated, 1);
}

#[test]
fn data_must_be_json() {
    for bad in ["", "{", "[1,]", "{'a': 1}", "\"\\ud800\"", "NaN", "1 2"] {
        assert!(JsonData::new(bad).is_err(), "{bad:?} accepted");
    }
    let data: JsonData = "\n[ true ,\tfalse ]\n".parse().unwrap();
    assert_eq!(data.as_str(), "[true,false]");
    assert!(!data.as_str().contains('\n'));
}

#[cfg(feature = "serde_json")]
#[tokio::test]
async fn data_from_and_to_serde_json_values() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let value = serde_json::json!({"text": "line\nbreak", "n": 1});
    hub.publish_message(Some("s"), StatusMessage::new("x").data(value.clone()))
        .unwrap();
    let got = statuses(ready(&mut hub.subscribe("s", None)));
    let data = got[0].data().unwrap();
    assert!(!data.as_str().contains('\n'));
    assert_eq!(data.to_value(), value);
}
