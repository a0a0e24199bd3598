//! Concurrent setup from many threads creates one messenger, and nothing sent around it is lost.

use std::sync::{Arc, Barrier};

use futures_util::StreamExt;
use status_messenger::{add_status_message, setup_status_messenger_async, stream_status_updates};

#[test]
fn concurrent_setup_yields_one_messenger_and_loses_nothing() {
    const THREADS: usize = 16;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let messenger = setup_status_messenger_async();
                add_status_message(format!("from {thread}"));
                messenger as *const _ as usize
            })
        })
        .collect();
    let addresses: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(addresses.windows(2).all(|pair| pair[0] == pair[1]));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut texts: Vec<String> = runtime.block_on(async {
        stream_status_updates()
            .take(THREADS)
            .map(|(_, text)| text)
            .collect()
            .await
    });
    texts.sort();
    let mut expected: Vec<String> = (0..THREADS).map(|t| format!("from {t}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
}
