//! The WebSocket loop's write deadline (`Settings::write_timeout`) holds for a write that
//! waits on its first poll and then never finishes, and a write that waits once and then
//! finishes is not cut off.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Sink;
use status_messenger::web::ws::{self, Ended, Incoming, Outgoing};
use status_messenger::web::Settings;
use status_messenger::Hub;

/// A sink whose flushes wait: the first `ready_after` polls of each flush return `Pending`
/// (the first one waking its task at once), and with `None` every flush waits for ever.
struct SlowSink {
    flush_polls: usize,
    ready_after: Option<usize>,
    frames: Vec<Outgoing>,
}

impl Sink<Outgoing> for SlowSink {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Outgoing) -> Result<(), ()> {
        self.frames.push(frame);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.flush_polls += 1;
        if self
            .ready_after
            .is_some_and(|after| self.flush_polls > after)
        {
            self.flush_polls = 0;
            return Poll::Ready(Ok(()));
        }
        if self.flush_polls == 1 {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

fn settings(write_timeout: Duration) -> Settings {
    let mut settings = Settings::default();
    settings.write_timeout = write_timeout;
    settings.keep_alive = Duration::from_secs(3600);
    settings
}

#[tokio::test(start_paused = true)]
async fn a_write_that_waits_first_and_then_stalls_ends_stalled_at_the_deadline() {
    let hub = Hub::new(Default::default()).unwrap();
    hub.publish(Some("s"), "one").unwrap();
    let sink = SlowSink {
        flush_polls: 0,
        ready_after: None,
        frames: Vec::new(),
    };
    let limit = Duration::from_millis(250);
    let started = tokio::time::Instant::now();
    let ended = ws::forward(
        &hub,
        hub.subscribe("s", None),
        sink,
        futures_util::stream::pending::<Incoming>(),
        &settings(limit),
    )
    .await;
    assert_eq!(ended, Ended::Stalled);
    assert_eq!(
        started.elapsed(),
        limit,
        "ended at the write deadline exactly"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_that_waits_once_and_then_finishes_goes_on() {
    let hub = Hub::new(Default::default()).unwrap();
    hub.publish(Some("s"), "one").unwrap();
    let sink = SlowSink {
        flush_polls: 0,
        ready_after: Some(2),
        frames: Vec::new(),
    };
    let mut sink = Box::pin(sink);
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = futures_util::stream::once(async move {
        let _ = close_rx.await;
        Incoming::Close
    });
    let publisher = {
        let hub = hub.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            hub.publish(Some("s"), "two").unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = close_tx.send(());
        }
    };
    let settings = settings(Duration::from_secs(1));
    let forwarding = ws::forward(
        &hub,
        hub.subscribe("s", None),
        &mut sink,
        incoming,
        &settings,
    );
    let (ended, ()) = tokio::join!(forwarding, publisher);
    assert_eq!(ended, Ended::ClientClosed);
    let texts: Vec<&str> = sink
        .frames
        .iter()
        .filter_map(|frame| match frame {
            Outgoing::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("\"one\"") && texts[1].contains("\"two\""));
}
