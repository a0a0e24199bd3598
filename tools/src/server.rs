//! What the tools' servers and the programs that start them share: waiting for the signal to
//! stop, and reading the address a server prints when it listens.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;

/// Ctrl-C or SIGTERM (what the end-to-end driver sends), whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => drop(ctrl_c.await),
        }
    }
    #[cfg(not(unix))]
    drop(ctrl_c.await);
}

/// Reads a server's stdout on a thread of its own and sends the first `http://` address that
/// follows `listening on ` anywhere in a line (a log prefix may come first), without a trailing
/// `/`; then keeps draining stdout so the server never blocks writing to it. The channel is
/// closed, with nothing sent, if stdout ends first.
pub fn listen_url(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let url = line
                .split_once("listening on ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .filter(|url| url.starts_with("http://"));
            // The sender is taken only for an address: lines before it leave it in place.
            if let Some(url) = url {
                if let Some(tx) = tx.take() {
                    tx.send(url.trim_end_matches('/').to_string()).ok();
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::listen_url;

    #[test]
    fn the_address_is_read_after_a_log_prefix_and_only_once() {
        let out = "starting\n2026 INFO listening on http://127.0.0.1:3000/ now\n\
                   listening on http://127.0.0.1:4000\n";
        let rx = listen_url(std::io::Cursor::new(out.as_bytes().to_vec()));
        assert_eq!(rx.recv().as_deref(), Ok("http://127.0.0.1:3000"));
        assert!(rx.recv().is_err());
    }

    #[test]
    fn no_address_closes_the_channel() {
        let rx = listen_url(std::io::Cursor::new(b"listening on ftp://x\n".to_vec()));
        assert!(rx.recv().is_err());
    }
}
