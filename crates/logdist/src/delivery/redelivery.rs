//! Giving failed deliveries another attempt, or a dead-letter record.

use std::sync::Arc;

use logdist_router::{Cursor, Envelope, Router};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dead_letter::{DeadLetters, SHUTDOWN_ERROR};
use super::drain::DrainWatch;
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
    /// Counts the messages inside redelivery, for draining sessions.
    watch: Arc<DrainWatch>,
}

impl Redelivery {
    pub fn new(
        router: Arc<Router>,
        dead_letters: DeadLetters,
        stats: Arc<Stats>,
        max_attempts: u8,
        hard_stop: CancellationToken,
        watch: Arc<DrainWatch>,
    ) -> Self {
        Redelivery {
            router,
            dead_letters,
            stats,
            max_attempts,
            tasks: TaskTracker::new(),
            hard_stop,
            watch,
        }
    }

    /// Gives another chance to what a failed connection to `analyzer` held:
    /// `unacked` messages were written to it, so they count an attempt (and
    /// remember the analyzer); `queued` ones never reached it and do not.
    /// Messages that have had `max_attempts` go to the dead-letter file; the
    /// rest are rerouted to the analyzers still connected, most urgent first.
    ///
    /// Until each of them is placed or dead-lettered it is counted in the
    /// [`DrainWatch`], from before this returns: call it before the analyzer
    /// leaves the directory, so a draining session never sees the messages
    /// nowhere.
    pub fn hand_back(
        &self,
        analyzer: &Arc<str>,
        unacked: Vec<Envelope>,
        queued: Vec<Envelope>,
        error: Arc<str>,
    ) {
        let stopping = self.hard_stop.is_cancelled();
        let mut retry = Vec::with_capacity(unacked.len() + queued.len());
        for mut env in unacked {
            env.record_attempt(analyzer);
            if env.attempts() >= usize::from(self.max_attempts) {
                self.dead_letters.send(env, error.clone());
            } else {
                retry.push(env);
            }
        }
        retry.extend(queued);
        if stopping {
            for env in retry {
                self.dead_letters.send(env, error.clone());
            }
            return;
        }
        if retry.is_empty() {
            return;
        }
        // Stable: unacked messages went out first, so they stay first per level.
        retry.sort_by_key(Envelope::priority);
        self.stats.redelivered.add(retry.len() as u64);
        self.watch.enter(retry.len());
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut cursor = Cursor::new(retry.len() as u64);
            let shutdown_error: Arc<str> = Arc::from(SHUTDOWN_ERROR);
            for env in retry {
                let give_up = this.hard_stop.cancelled();
                match this.router.route_or_wait(&mut cursor, env, give_up).await {
                    Ok(placed) => this.stats.count(placed),
                    Err(env) => this.dead_letters.send(env, shutdown_error.clone()),
                }
                this.watch.leave(1);
            }
        });
    }

    /// Waits until every hand-back has been rerouted or dead-lettered.
    pub async fn settled(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}
