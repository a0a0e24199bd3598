//! The signals a server stops on: [`shutdown_signal`].

/// Resolves on the first Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `docker stop`,
/// systemd and Kubernetes send): the future a server's shutdown waits for, before
/// [`Endpoints::shutdown`](crate::web::Endpoints::shutdown).
///
/// A signal that cannot be listened for (the process has no signal handling, say) is logged
/// at error level and waited for no more; if neither can be, this never resolves. Needs a
/// tokio runtime with I/O enabled (actix-web's is). Once it has been called, tokio handles
/// these signals for the rest of the process: a second Ctrl-C no longer ends the process at
/// once, so a server bounds its shutdown (as [`Endpoints::shutdown`]'s `grace` does).
///
/// [`Endpoints::shutdown`]: crate::web::Endpoints::shutdown
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// let endpoints = status_messenger::web::Endpoints::new(hub);
/// status_messenger::web::shutdown_signal().await;
/// let left = endpoints.shutdown(std::time::Duration::from_secs(5)).await;
/// assert_eq!(left, 0);
/// # }
/// ```
///
/// Sending the process SIGTERM resolves it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # #[cfg(unix)] {
/// use tokio::signal::unix::{signal, SignalKind};
/// // tokio's handler from here on, so that a SIGTERM cannot end this test's process.
/// let _ours = signal(SignalKind::terminate()).unwrap();
/// let stop = tokio::spawn(status_messenger::web::shutdown_signal());
/// // The spawned task runs meanwhile, and listens from then on.
/// tokio::time::sleep(std::time::Duration::from_millis(50)).await;
/// assert!(!stop.is_finished());
/// std::process::Command::new("kill")
///     .args(["-TERM", &std::process::id().to_string()])
///     .status()
///     .unwrap();
/// tokio::time::timeout(std::time::Duration::from_secs(10), stop).await.unwrap().unwrap();
/// # }
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(target: "status_messenger::web", %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(target: "status_messenger::web", %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
