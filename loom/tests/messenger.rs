//! Model checks of the messenger: a stream handing over to the next one, a sleeping stream
//! woken by the senders it waits for, and the switch to and from direct delivery, each raced
//! against senders. Every interleaving loom explores (within each model's preemption bound)
//! must deliver every message exactly once, each producer's messages in the order it sent
//! them; a stream that sleeps with a message waiting and no wake-up to come is a deadlock,
//! which loom reports.
#![cfg(status_messenger_loom)]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use status_messenger::{Messenger, StatusStream, StreamError};

/// Runs `f` in every interleaving within a preemption bound of `bound` (or
/// `LOOM_MAX_PREEMPTIONS`), which keeps the whole run short.
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// What `stream` yields without waiting, at most `max` messages.
fn take_ready(stream: &mut StatusStream, max: usize) -> Vec<String> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = Vec::new();
    while taken.len() < max {
        match Pin::new(&mut *stream).poll_next(&mut cx) {
            Poll::Ready(Some((_, text))) => taken.push(text),
            Poll::Ready(None) => panic!("a live stream ended"),
            Poll::Pending => break,
        }
    }
    taken
}

/// Everything `messenger` holds for its next stream.
fn drain(messenger: &Messenger) -> Vec<String> {
    let mut stream = messenger
        .try_stream()
        .expect("no consumer is left to hold the stream");
    take_ready(&mut stream, usize::MAX)
}

/// `consumed` (in the order consumers took them) holds each message of `producers` exactly
/// once, and each producer's messages in the order that producer sent them.
fn assert_exactly_once_in_order(consumed: &[String], producers: &[&[&str]]) {
    let mut sorted = consumed.to_vec();
    sorted.sort();
    let mut expected: Vec<String> = producers
        .iter()
        .flat_map(|sent| sent.iter().map(|text| text.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "lost or duplicated: consumed {consumed:?}"
    );
    for sent in producers {
        let theirs: Vec<&str> = consumed
            .iter()
            .map(String::as_str)
            .filter(|text| sent.contains(text))
            .collect();
        assert_eq!(&theirs, sent, "out of order: consumed {consumed:?}");
    }
}

/// The next message of `stream`, waiting for it as an async consumer does: `Pending` with the
/// waker registered, then asleep in `block_on` until something wakes it.
fn next_blocking(stream: &mut StatusStream) -> String {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    match loom::future::block_on(next) {
        Some((_, text)) => text,
        None => panic!("a live stream ended"),
    }
}

/// What a direct consumer was handed, in order.
type Record = Arc<Mutex<Vec<String>>>;

/// A direct consumer that appends what it is handed to `record`.
fn recorder(
    record: &Record,
) -> impl Fn(Option<&str>, String) -> Result<(), String> + Send + Sync + 'static {
    let record = Arc::clone(record);
    move |_, text| {
        record.lock().unwrap().push(text);
        Ok(())
    }
}

#[test]
fn a_stream_dropped_mid_way_hands_everything_to_the_next_one_in_order() {
    model(5, || {
        let messenger = Messenger::new();
        messenger.send(None, "early");
        let mut first = messenger.stream();

        let producer = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                messenger.send(None, "p0");
                messenger.send(None, "p1");
            })
        };
        let consumer = thread::spawn(move || {
            // One message out; the first poll drains the rest queued into the stream's buffer,
            // which the drop must park for the next stream.
            let consumed = take_ready(&mut first, 1);
            drop(first);
            consumed
        });

        // Raced against the drop: refused while the first stream lives, else it takes over.
        let mut second = messenger.try_stream().ok();
        let mut from_second = second
            .as_mut()
            .map(|second| take_ready(second, 1))
            .unwrap_or_default();
        let mut consumed = consumer.join().unwrap();
        let mut second = match second {
            Some(second) => second,
            None => messenger
                .try_stream()
                .expect("the dropped stream gave the receiver back"),
        };
        producer.join().unwrap();
        from_second.extend(take_ready(&mut second, usize::MAX));
        drop(second);

        consumed.extend(from_second);
        assert_exactly_once_in_order(&consumed, &[&["early"], &["p0", "p1"]]);
        assert_eq!(messenger.received(), 3);
        assert!(!messenger.stream_live());
    });
}

#[test]
fn a_sleeping_stream_is_woken_for_every_message_it_waits_for() {
    // Two senders race each other for the stream's `parked` flag and the stream's second look
    // at the channel; the stream sleeps in between whenever it finds nothing.
    model(3, || {
        let messenger = Messenger::new();
        let mut stream = messenger.stream();
        let producers: Vec<_> = [["a0", "a1"], ["b0", "b1"]]
            .into_iter()
            .map(|texts| {
                let messenger = messenger.clone();
                thread::spawn(move || {
                    for text in texts {
                        messenger.send(None, text);
                    }
                })
            })
            .collect();
        let consumed: Vec<String> = (0..4).map(|_| next_blocking(&mut stream)).collect();
        for producer in producers {
            producer.join().unwrap();
        }
        assert_exactly_once_in_order(&consumed, &[&["a0", "a1"], &["b0", "b1"]]);
        assert_eq!(stream.pending(), 0);
    });
}

#[test]
fn a_stream_that_replaces_a_sleeping_one_is_woken_too() {
    // The first stream sleeps and is dropped with its waker registered; the next one, on
    // another thread, must still be woken for a message sent meanwhile.
    model(3, || {
        let messenger = Messenger::new();
        let mut first = messenger.stream();
        assert!(take_ready(&mut first, 1).is_empty());
        let producer = {
            let messenger = messenger.clone();
            thread::spawn(move || messenger.send(None, "p0"))
        };
        drop(first);
        let consumer = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                let mut second = messenger.try_stream().expect("the first stream is gone");
                next_blocking(&mut second)
            })
        };
        producer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), "p0");
        assert_eq!(messenger.received(), 1);
    });
}

#[test]
fn switching_to_direct_delivery_loses_duplicates_and_reorders_nothing() {
    model(4, || {
        let messenger = Messenger::new();
        messenger.send(None, "early");
        let mut stream = messenger.stream();
        let direct = Record::default();
        let switch = |messenger: &Messenger| messenger.model_set_direct(recorder(&direct));

        let producer = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                messenger.send(None, "p0");
                messenger.send(None, "p1");
            })
        };
        let consumer = thread::spawn(move || {
            let consumed = take_ready(&mut stream, 1);
            drop(stream);
            consumed
        });

        // Raced against the stream's drop: refused while the stream lives, else taken.
        let switched = match switch(&messenger) {
            Ok(()) => true,
            Err(StreamError::AlreadyConsumed) => false,
            Err(error) => panic!("{error}"),
        };
        let mut consumed = consumer.join().unwrap();
        if !switched {
            switch(&messenger).expect("the stream is gone");
        }
        assert!(messenger.is_direct());
        producer.join().unwrap();
        messenger.send(None, "late");
        messenger.model_clear_direct();

        consumed.extend(direct.lock().unwrap().drain(..));
        consumed.extend(drain(&messenger));
        assert_exactly_once_in_order(&consumed, &[&["early", "late"], &["p0", "p1"]]);
        assert_eq!(messenger.received(), 4);
    });
}

#[test]
fn a_send_racing_the_switch_is_handed_to_the_direct_consumer_before_it_returns() {
    // The senders read the switch's flag without a lock: one that read it before the switch
    // began pushes into the channel, and either the switch's drain finds the message or the
    // sender sees the flag after its push and hands the channel over itself. Two senders, so
    // that one may hand over the other's message.
    model(3, || {
        let messenger = Messenger::new();
        let direct = Record::default();
        let producers: Vec<_> = [["a0", "a1"], ["b0", "b1"]]
            .into_iter()
            .map(|texts| {
                let messenger = messenger.clone();
                thread::spawn(move || {
                    for text in texts {
                        messenger.send(None, text);
                    }
                })
            })
            .collect();
        messenger.model_set_direct(recorder(&direct)).unwrap();
        for producer in producers {
            producer.join().unwrap();
        }
        // Every send has returned with direct delivery on: nothing may wait in the channel.
        let delivered: Vec<String> = direct.lock().unwrap().drain(..).collect();
        assert_exactly_once_in_order(&delivered, &[&["a0", "a1"], &["b0", "b1"]]);
        assert_eq!(messenger.received(), 4);
        messenger.model_clear_direct();
        assert!(drain(&messenger).is_empty());
    });
}

#[test]
fn ending_direct_delivery_leaves_later_messages_in_order_for_the_next_stream() {
    model(5, || {
        let messenger = Messenger::new();
        let direct = Record::default();
        messenger.model_set_direct(recorder(&direct)).unwrap();

        let producer = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                for text in ["p0", "p1", "p2"] {
                    messenger.send(None, text);
                }
            })
        };
        let ender = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                messenger.model_clear_direct();
                let mut next = messenger
                    .try_stream()
                    .expect("ending direct delivery gave the stream back");
                let consumed = take_ready(&mut next, 1);
                (consumed, next)
            })
        };

        producer.join().unwrap();
        let (mut from_stream, mut next) = ender.join().unwrap();
        from_stream.extend(take_ready(&mut next, usize::MAX));
        drop(next);

        let mut consumed: Vec<String> = direct.lock().unwrap().drain(..).collect();
        consumed.extend(from_stream);
        assert_exactly_once_in_order(&consumed, &[&["p0", "p1", "p2"]]);
        assert!(!messenger.is_direct());
        assert_eq!(messenger.received(), 3);
    });
}

#[test]
fn a_direct_consumer_that_gives_messages_back_while_detaching_keeps_them_in_order() {
    // As `Hub::shutdown` detaches: refuse from now on, then end direct delivery.
    model(5, || {
        let messenger = Messenger::new();
        let detached = Arc::new(AtomicBool::new(false));
        let direct = Record::default();
        let deliver = {
            let detached = Arc::clone(&detached);
            let record = recorder(&direct);
            move |session: Option<&str>, text: String| {
                if detached.load(Ordering::Acquire) {
                    return Err(text);
                }
                record(session, text)
            }
        };
        messenger.model_set_direct(deliver).unwrap();

        let producer = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                for text in ["p0", "p1", "p2"] {
                    messenger.send(None, text);
                }
            })
        };
        let detacher = {
            let messenger = messenger.clone();
            thread::spawn(move || {
                detached.store(true, Ordering::Release);
                messenger.model_clear_direct();
            })
        };

        producer.join().unwrap();
        detacher.join().unwrap();
        let mut consumed: Vec<String> = direct.lock().unwrap().drain(..).collect();
        consumed.extend(drain(&messenger));
        assert_exactly_once_in_order(&consumed, &[&["p0", "p1", "p2"]]);
        assert_eq!(messenger.received(), 3);
    });
}
