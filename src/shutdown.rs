//! Turning SIGINT (Ctrl-C) and SIGTERM into a shutdown token.
//!
//! The token is passed into every task (nothing global): the first signal
//! cancels it and the tasks drain; a second signal ends the process at once,
//! for when draining takes longer than the person waiting wants.

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGINT or SIGTERM; the second one exits with status 130.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!(
                    "shutting down: finishing in-flight work (signal again to stop at once)"
                );
                cancel.cancel();
            } else {
                tracing::warn!("second signal: stopping without draining");
                std::process::exit(130);
            }
        }
    });
    token
}
