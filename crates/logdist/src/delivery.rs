//! Giving failed deliveries another attempt, or a dead-letter record.

use std::sync::Arc;

use logdist_router::{Cursor, Envelope, Router};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dead_letter::DeadLetters;
use crate::stats::Stats;

/// Where messages go when an analyzer connection fails with them queued or unacked.
#[derive(Clone)]
pub struct Redelivery {
    router: Arc<Router>,
    dead_letters: DeadLetters,
    stats: Arc<Stats>,
    max_attempts: u8,
    tasks: TaskTracker,
    hard_stop: CancellationToken,
}

/// Final error recorded for messages still held when the grace period ends.
pub const SHUTDOWN_ERROR: &str = "shutdown";

impl Redelivery {
    pub fn new(
        router: Arc<Router>,
        dead_letters: DeadLetters,
        stats: Arc<Stats>,
        max_attempts: u8,
        hard_stop: CancellationToken,
    ) -> Self {
        Redelivery {
            router,
            dead_letters,
            stats,
            max_attempts,
            tasks: TaskTracker::new(),
            hard_stop,
        }
    }

    /// Counts one more attempt on each envelope and reroutes it to the analyzers
    /// still connected, or dead-letters it once it has had `max_attempts`.
    /// `envelopes` should be in priority order; rerouting keeps that order.
    pub fn hand_back(&self, envelopes: Vec<Envelope>, error: Arc<str>) {
        let mut retry = Vec::with_capacity(envelopes.len());
        let stopping = self.hard_stop.is_cancelled();
        for mut env in envelopes {
            env.attempts = env.attempts.saturating_add(1);
            if stopping || env.attempts >= self.max_attempts {
                self.dead_letters.send(env, error.clone());
            } else {
                retry.push(env);
            }
        }
        if retry.is_empty() {
            return;
        }
        self.stats.redelivered.add(retry.len() as u64);
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut cursor = Cursor::new(retry.len() as u64);
            let shutdown_error: Arc<str> = Arc::from(SHUTDOWN_ERROR);
            for env in retry {
                let give_up = this.hard_stop.cancelled();
                match this.router.route_or_wait(&mut cursor, env, give_up).await {
                    Ok(routed) => {
                        this.stats.routed.add(1);
                        this.stats.diverted.add(routed.diverted as u64);
                    }
                    Err(env) => this.dead_letters.send(env, shutdown_error.clone()),
                }
            }
        });
    }

    /// Sends `env` straight to the dead-letter file.
    pub fn dead_letter(&self, env: Envelope, error: Arc<str>) {
        self.dead_letters.send(env, error);
    }

    /// Waits until every hand-back has been rerouted or dead-lettered.
    pub async fn settled(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}
