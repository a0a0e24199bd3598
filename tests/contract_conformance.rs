//! Both demo servers, run as processes, as an outside client sees them: what the HTTP
//! contract and the crate's docs promise of the streams and their errors, checked on the wire,
//! beside the cases of `tests/support` that every server on the endpoints passes.

mod support;

use std::future::Future;

use futures_util::{SinkExt, StreamExt};
use support::demo::Demo;
use support::{create_session, ws_connect, Server, StartFn, WAIT};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn axum_demo() -> Server {
    Demo::Axum.start(&[])
}

fn actix_demo() -> Server {
    Demo::Actix.start(&[])
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The client's close frame is answered with a close frame (RFC 6455, section 5.5.1), so the
/// client sees a clean close (a browser's `CloseEvent` has `wasClean` and code 1000, not
/// 1006), as `web::ws::Ended::ClientClosed` says: "its close was answered".
async fn a_client_close_is_answered_with_a_close_frame(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye)))
        .await
        .expect("send close");
    let answer = loop {
        match within("the answer to the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break Ok(frame),
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(error.to_string()),
            None => break Err("the stream ended".to_owned()),
        }
    };
    let frame = answer.unwrap_or_else(|error| {
        panic!("the server dropped the connection without answering the close: {error}")
    });
    assert_eq!(
        frame.map(|frame| frame.code),
        Some(CloseCode::Normal),
        "the answer to a normal close"
    );
    // And the server goes on serving that session.
    let mut again = ws_connect(&server, &id, None).await;
    support::start_task(&server, &id, 1, 0).await;
    let frames = within("a status after the close", support::ws_take(&mut again, 1)).await;
    assert_eq!(frames[0]["seq"], 1);
}

macro_rules! on_both_demos {
    ($($case:ident),* $(,)?) => {
        mod axum {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(axum_demo).await;
                }
            )*
        }
        mod actix {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(actix_demo).await;
                }
            )*
        }
    };
}

on_both_demos!(a_client_close_is_answered_with_a_close_frame);
