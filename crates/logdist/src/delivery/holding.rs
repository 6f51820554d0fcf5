//! Releases the holding queue: messages accepted while no analyzer could take
//! any wait there, and flow out as soon as one can. With `hold_timeout` set,
//! those that waited too long are dead-lettered instead, which also makes room
//! for emitters kept waiting by a full holding queue.

use std::sync::Arc;
use std::time::Duration;

use logdist_router::{Cursor, Router};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{DeadLetters, SHUTDOWN_ERROR};
use crate::stats::Stats;

/// Runs until `stop` (shutdown's hard stop), then dead-letters whatever is
/// still held.
pub async fn release_held(
    router: Arc<Router>,
    stats: Arc<Stats>,
    dead_letters: DeadLetters,
    stop: CancellationToken,
    hold_timeout: Option<Duration>,
) {
    let Some(holding) = router.holding().cloned() else {
        return;
    };
    let expired_error: Arc<str> = match hold_timeout {
        Some(timeout) => Arc::from(format!(
            "hold_timeout: no analyzer took it within {timeout:?}"
        )),
        None => Arc::from(""),
    };
    let mut cursor = Cursor::new(0);
    loop {
        // Both created before the checks below, so a change in between wakes us.
        let table_changed = router.space().notified();
        let arrived = holding.notified();
        if router.load().total_weight() > 0.0
            && let Some(env) = holding.pop()
        {
            match router
                .route_or_wait(&mut cursor, env, stop.cancelled())
                .await
            {
                // `Held` means the analyzers left again: it is back in the queue.
                Ok(placed) => stats.count(placed),
                Err(env) => dead_letters.send(env, Arc::from(SHUTDOWN_ERROR)),
            }
            continue;
        }
        let expiry = hold_timeout.and_then(|timeout| {
            holding
                .oldest_arrival()
                .map(|oldest| Instant::from_std(oldest) + timeout)
        });
        tokio::select! {
            _ = table_changed => {}
            _ = arrived => {}
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let timeout = hold_timeout.expect("expiry implies a timeout");
                if let Some(cutoff) = std::time::Instant::now().checked_sub(timeout) {
                    for env in holding.take_arrived_before(cutoff) {
                        dead_letters.send(env, expired_error.clone());
                    }
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    let shutdown_error: Arc<str> = Arc::from(SHUTDOWN_ERROR);
    while let Some(env) = holding.pop() {
        dead_letters.send(env, shutdown_error.clone());
    }
}
