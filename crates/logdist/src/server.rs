//! Binding the listeners, running them, and shutting down without losing anything.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logdist_router::Router;
use logdist_wire::{IngestFormat, IngestLimits};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::budget::MemoryBudget;
use crate::config::{
    AckMode, Config, ConfigError, DurabilityConfig, DurabilityMode, MetricsConfig, SpoolSync,
};
use crate::control::admin::guard::AdminAuth;
use crate::control::admin::{self, AdminSettings};
use crate::control::metrics_csv;
use crate::control::observed::Observed;
use crate::control::reload::{ReloadHandle, Reloader};
use crate::custody::Custody;
use crate::delivery::access::{AccessPolicy, AnalyzerAccess, TokenSet};
use crate::delivery::backlog::{self, Backlog, Feeder};
use crate::delivery::context::{DeliveryContext, SessionSettings};
use crate::delivery::dead_letter::{DeadLetterFile, DeadLetters, SHUTDOWN_ERROR};
use crate::delivery::directory::Directory;
use crate::delivery::drain::DrainWatch;
use crate::delivery::holding::release_held;
use crate::delivery::listener::accept_analyzers;
use crate::delivery::redelivery::Redelivery;
use crate::ingest::context::{EmitterTimeouts, IngestContext};
use crate::ingest::http;
use crate::ingest::listener::{ListenerMode, accept_emitters};
use crate::ingest::spooling::Spooling;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::http::GatedListener;
use crate::transport::{Gate, Gates, Policy};
use logdist_spool::{OpenError, Spool, SpoolConfig, SyncMode};

/// A distributor whose listeners are bound (so their ports are known) but not yet serving.
pub struct Server {
    ingest: Arc<IngestContext>,
    delivery: Arc<DeliveryContext>,
    observed: Observed,
    emitter_listeners: Vec<(TcpListener, ListenerMode, Arc<Gate>)>,
    analyzer_listener: TcpListener,
    analyzer_max_connections: usize,
    admin_listener: Option<TcpListener>,
    /// Every listener's allow list and TLS, shared with the reloader.
    gates: Arc<Gates>,
    admin: AdminSettings,
    admin_max_connections: usize,
    dead_letters: DeadLetterFile,
    max_connections: usize,
    hold_timeout: Option<Duration>,
    metrics: MetricsConfig,
    reloader: Arc<Reloader>,
}

/// The addresses a bound [`Server`] listens on.
#[derive(Clone, Debug, Serialize)]
pub struct Addresses {
    pub pid: u32,
    pub listeners: Vec<ListenerAddress>,
    pub analyzers: SocketAddr,
    /// The admin HTTP API, unless `[admin] listen` is empty.
    pub admin: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ListenerAddress {
    pub address: SocketAddr,
    pub ack: AckMode,
    pub format: IngestFormat,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A setting that cannot be used (a certificate that does not load, ...):
    /// the same kind of error as a config that does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The spool directory (disk mode) is locked by another process, or
    /// cannot be used.
    #[error("durability.dir: {0}")]
    Spool(#[from] OpenError),
}

/// What shutdown left behind.
#[derive(Debug)]
pub struct ShutdownReport {
    pub stats: StatsSnapshot,
    /// Disk mode: messages still held at the end, left in the spool for
    /// the next start.
    pub kept_in_spool: u64,
}

impl Server {
    /// Reads every certificate, key and token file `config` names, then
    /// binds every listener of `config`.
    pub async fn bind(config: &Config) -> Result<Server, BindError> {
        // The error names the key, never a token.
        let secrets = config.secrets()?;
        let stats = Arc::new(Stats::default());
        let gates = Arc::new(Gates::load(config, &stats)?);
        // Before the listeners: a second logdist on the same spool stops here.
        let (custody, spooling) = open_custody(&config.durability).await?;
        let mut emitter_listeners = Vec::with_capacity(config.listeners.len());
        for (listener, gate) in config.listeners.iter().zip(&gates.emitters) {
            let bound = bind(listener.address, "emitter").await?;
            let mode = ListenerMode {
                ack: listener.ack,
                format: listener.format,
            };
            emitter_listeners.push((bound, mode, gate.clone()));
        }
        let analyzer_listener = bind(config.analyzers.listen, "analyzer").await?;
        let admin_listener = match config.admin.address() {
            Some(address) => Some(bind(address, "admin HTTP request").await?),
            None => None,
        };

        let router = Arc::new(Router::with_holding(config.delivery.hold_capacity));
        let shutdown = Shutdown::default();
        let dead_letters = DeadLetterFile::start(
            config.delivery.dead_letter_path.clone(),
            stats.clone(),
            custody.clone(),
        );
        let drain = Arc::new(DrainWatch::default());
        let redelivery = Redelivery::new(
            router.clone(),
            dead_letters.handle(),
            stats.clone(),
            config.delivery.max_attempts,
            shutdown.hard_stop.clone(),
            drain.clone(),
        );
        let priorities = config.priorities.table();
        let directory = Arc::new(Directory::new(stats.clone(), router.clone()));
        directory.set_max_weight(config.analyzers.max_weight);
        let access = Arc::new(AnalyzerAccess::new(AccessPolicy {
            tokens: TokenSet::new(&secrets.analyzer_tokens),
            seed_from: config.analyzers.seed_networks(),
        }));
        let admin_auth = Arc::new(AdminAuth::new(secrets.admin_token.as_ref()));
        warn_if_open(config, &secrets, &gates.analyzers);
        let budget = MemoryBudget::new(config.limits.max_buffered_bytes);
        let ingest = Arc::new(IngestContext {
            router: router.clone(),
            stats: stats.clone(),
            dead_letters: dead_letters.handle(),
            shutdown: shutdown.clone(),
            limits: IngestLimits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_line_bytes: config.limits.max_line_bytes,
                max_decompressed_bytes: config.limits.max_decompressed_bytes,
            },
            priorities: Arc::new(priorities),
            timeouts: EmitterTimeouts::from_limits(&config.limits),
            inflation_slots: IngestContext::inflation_slots(),
            budget: budget.clone(),
            spooling,
        });
        let observed = Observed {
            stats: stats.clone(),
            directory: directory.clone(),
            router: router.clone(),
            budget,
            custody: custody.clone(),
            backlog: ingest.spooling.as_ref().map(|s| s.backlog.clone()),
            started: Instant::now(),
        };
        let delivery = Arc::new(DeliveryContext {
            router,
            stats,
            directory,
            redelivery,
            drain,
            shutdown,
            settings: SessionSettings {
                queue_capacity: config.analyzers.queue_capacity,
                window: config.analyzers.window,
                ack_timeout: config.analyzers.ack_timeout,
                write_coalesce: config.analyzers.write_coalesce,
                user_timeout: config.analyzers.user_timeout,
                probe_interval: config.analyzers.probe_interval,
                reconnect_min: config.analyzers.reconnect_min,
                reconnect_max: config.analyzers.reconnect_max,
                drain_grace: config.delivery.shutdown_grace,
            },
            access,
            custody,
        });
        let reloader = Arc::new(Reloader::new(
            delivery.clone(),
            admin_auth.clone(),
            config.clone(),
            gates.clone(),
        )?);
        let admin_loopback = admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .is_some_and(|a| a.ip().is_loopback());
        Ok(Server {
            ingest,
            delivery,
            observed,
            emitter_listeners,
            analyzer_listener,
            analyzer_max_connections: config.analyzers.max_connections,
            admin_listener,
            gates,
            admin: AdminSettings {
                dead_letter_path: config.delivery.dead_letter_path.clone(),
                window: config.analyzers.window,
                body_limit: config.admin.max_body_bytes,
                auth: admin_auth,
                loopback_only: admin_loopback,
                header_read_timeout: config.admin.header_read_timeout,
            },
            admin_max_connections: config.admin.max_connections,
            dead_letters,
            max_connections: config.limits.max_connections,
            hold_timeout: config.delivery.hold_timeout,
            metrics: config.metrics.clone(),
            reloader,
        })
    }

    pub fn addresses(&self) -> Addresses {
        let local = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        Addresses {
            pid: std::process::id(),
            listeners: self
                .emitter_listeners
                .iter()
                .map(|(l, mode, _)| ListenerAddress {
                    address: local(l),
                    ack: mode.ack,
                    format: mode.format,
                })
                .collect(),
            analyzers: local(&self.analyzer_listener),
            admin: self.admin_listener.as_ref().map(local),
        }
    }

    /// Applies a changed config to the running server (SIGHUP); see [`crate::reload`].
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle::new(self.reloader.clone())
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.observed.stats.clone()
    }

    /// The analyzer registry and routing table.
    pub fn router(&self) -> Arc<Router> {
        self.observed.router.clone()
    }

    /// Every analyzer known and its health.
    pub fn directory(&self) -> Arc<Directory> {
        self.observed.directory.clone()
    }

    /// Serves until `signal` completes, then shuts down gracefully: stop
    /// accepting, route what emitters already sent, drain analyzer queues for up
    /// to the grace period, and dead-letter whatever is still held.
    pub async fn run(self, signal: impl Future<Output = ()>) -> ShutdownReport {
        let (ingest, delivery) = (self.ingest, self.delivery);
        let shutdown = delivery.shutdown.clone();
        let emitters = TaskTracker::new();
        let analyzers = self.reloader.tasks();
        let permits = Arc::new(Semaphore::new(self.max_connections));

        let mut acceptors = Vec::new();
        for (listener, mode, gate) in self.emitter_listeners {
            acceptors.push(tokio::spawn(accept_emitters(
                listener,
                mode,
                gate,
                ingest.clone(),
                emitters.clone(),
                permits.clone(),
            )));
        }
        acceptors.push(tokio::spawn(accept_analyzers(
            self.analyzer_listener,
            self.gates.analyzers.clone(),
            self.analyzer_max_connections,
            delivery.clone(),
            analyzers.clone(),
        )));
        self.reloader.start_statics().await;
        if let Some(listener) = self.admin_listener {
            let gate = self.gates.admin.clone();
            let tls = gate.is_tls();
            match GatedListener::new(
                listener,
                gate,
                self.admin_max_connections,
                "admin.max_connections",
            ) {
                Ok(listener) => {
                    // Tracked with the emitters: an HTTP ingest request is an emitter too.
                    let ingest = http::routes(ingest.clone(), emitters.clone());
                    emitters.spawn(admin::serve(
                        listener,
                        tls,
                        self.observed.clone(),
                        self.admin,
                        ingest,
                        shutdown.stop_accepting.clone(),
                    ));
                }
                Err(err) => tracing::error!(%err, "admin API not started"),
            }
        }
        let holding = tokio::spawn(release_held(
            delivery.router.clone(),
            delivery.stats.clone(),
            ingest.dead_letters.clone(),
            shutdown.hard_stop.clone(),
            self.hold_timeout,
        ));
        let csv = metrics_csv::start(&self.metrics, self.observed.clone());
        let feeder = ingest.spooling.as_ref().map(|spooling| {
            tokio::spawn(backlog::feed(Feeder {
                backlog: spooling.backlog.clone(),
                spool: spooling.spool.clone(),
                router: delivery.router.clone(),
                budget: ingest.budget.clone(),
                stats: delivery.stats.clone(),
                stop: shutdown.stop_accepting.clone(),
            }))
        });

        signal.await;
        let grace = delivery.settings.drain_grace;
        let signalled = tokio::time::Instant::now();
        let deadline = signalled + grace;
        // Past the grace period every task has been told to stop (hard stop)
        // and does at once; one that has not ended by then is left behind, so
        // that shutdown ends whatever the peers do.
        let tasks_by = deadline + HARD_STOP_WAIT;
        tracing::info!(?grace, "shutting down: no new connections, draining queues");
        let hard_stop = shutdown.hard_stop.clone();
        let grace_timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            hard_stop.cancel();
        });

        shutdown.stop_accepting.cancel();
        for acceptor in acceptors {
            within(tasks_by, "an accept loop", acceptor).await;
        }
        if let Some(feeder) = feeder {
            within(tasks_by, "the backlog feeder", feeder).await;
        }
        emitters.close();
        if tokio::time::timeout_at(deadline, emitters.wait())
            .await
            .is_err()
        {
            tracing::info!(
                connections = emitters.len(),
                "grace period over with emitter connections still busy (waiting for room, for \
                 their replies to be read, or decoding): what they hold is dead-lettered, what \
                 they read and did not decode is dropped"
            );
        }
        within(tasks_by, "emitter connections", emitters.wait()).await;
        shutdown.drain.cancel();
        analyzers.close();
        within(tasks_by, "analyzer connections", analyzers.wait()).await;
        // Every session is gone: whatever is still held or being rerouted has
        // nowhere to go but the dead-letter file.
        shutdown.hard_stop.cancel();
        grace_timer.abort();
        within(tasks_by, "the holding queue", holding).await;
        within(tasks_by, "redeliveries", delivery.redelivery.settled()).await;
        if let Some(csv) = csv {
            within(tasks_by, "the CSV export", csv.finish()).await;
        }

        sweep_queues(&delivery.router, &ingest.dead_letters);

        let dead_letters = self.dead_letters;
        let closing = tokio::task::spawn_blocking(move || dead_letters.close());
        match tokio::time::timeout_at(tasks_by + DEAD_LETTER_WAIT, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("dead-letter writer did not close cleanly"),
            Err(_) => {
                let lost = ingest.dead_letters.give_up_pending();
                tracing::error!(
                    waited = ?(tokio::time::Instant::now() - signalled),
                    lost,
                    "the dead-letter file was not written and synced in time (a slow disk?): \
                     dead letters not yet written are counted as dead_letter_failures"
                );
            }
        }
        if let Some(spool) = delivery.custody.spool().cloned() {
            // Acknowledgements not yet written would only mean duplicates
            // after a restart; appends not yet synced were never acked `ok`.
            let closing = tokio::task::spawn_blocking(move || spool.close());
            if tokio::time::timeout_at(tasks_by + DEAD_LETTER_WAIT, closing)
                .await
                .is_err()
            {
                tracing::error!("the spool was not synced in time (a slow disk?)");
            }
        }
        ShutdownReport {
            stats: delivery.stats.snapshot(),
            kept_in_spool: delivery.custody.counts().kept_at_shutdown.get(),
        }
    }
}

/// How long shutdown waits past the grace period for tasks to end, once
/// they have all been told to stop (hard stop).
const HARD_STOP_WAIT: Duration = Duration::from_millis(750);

/// How long shutdown then waits for the dead-letter file to be synced.
const DEAD_LETTER_WAIT: Duration = Duration::from_millis(500);

/// Waits for `task` until `by`; logs what was left behind.
async fn within<F: Future>(by: tokio::time::Instant, what: &str, task: F) {
    if tokio::time::timeout_at(by, task).await.is_err() {
        tracing::warn!("shutdown left {what} behind: still busy past the grace period");
    }
}

/// Dead-letters whatever is still queued after shutdown's waits: nothing,
/// unless a task was left behind (it can no longer hand its queue back).
fn sweep_queues(router: &Router, dead_letters: &DeadLetters) {
    let error: Arc<str> = Arc::from(SHUTDOWN_ERROR);
    let mut swept = 0usize;
    for analyzer in router.load().analyzers() {
        for env in analyzer.queues.close_and_drain() {
            dead_letters.send(env, error.clone());
            swept += 1;
        }
    }
    if let Some(holding) = router.holding() {
        while let Some(env) = holding.pop() {
            dead_letters.send(env, error.clone());
            swept += 1;
        }
    }
    if swept > 0 {
        tracing::warn!(
            messages = swept,
            "dead-lettered what tasks left behind still held queued"
        );
    }
}

/// Memory mode, or the spool opened (its lock taken, what it holds
/// recovered into the backlog).
async fn open_custody(config: &DurabilityConfig) -> Result<(Custody, Option<Spooling>), BindError> {
    if config.mode == DurabilityMode::Memory {
        return Ok((Custody::memory(), None));
    }
    let spool_config = SpoolConfig {
        dir: config.dir.clone(),
        sync: match config.sync {
            SpoolSync::Fsync => SyncMode::Fsync,
            SpoolSync::Write => SyncMode::Write,
        },
        max_batch_delay: config.max_batch_delay,
        segment_bytes: config.segment_bytes,
        max_bytes: config.max_bytes,
    };
    let started = Instant::now();
    // Recovery reads the whole spool: off the async workers.
    let (spool, recovered) = tokio::task::spawn_blocking(move || Spool::open(spool_config))
        .await
        .map_err(|err| std::io::Error::other(format!("opening the spool failed: {err}")))??;
    let custody = Custody::disk(spool.clone());
    let counts = custody.counts();
    counts.recovered.add(recovered.records.len() as u64);
    counts.torn_tails.add(recovered.torn_tails);
    let backlog = Arc::new(Backlog::default());
    backlog.extend(&recovered.records);
    tracing::info!(
        dir = %config.dir.display(),
        recovered = recovered.records.len(),
        torn_tails = recovered.torn_tails,
        torn_bytes = recovered.torn_bytes,
        took = ?started.elapsed(),
        "spool opened (durability.mode = \"disk\")"
    );
    Ok((custody, Some(Spooling { spool, backlog })))
}

/// One warning per listener that anyone on the network can use, naming the
/// keys that would close it: the analyzer listener when analyzers from other
/// hosts can attach without a certificate and without a token (or with the
/// tokenless seed handshake), the admin API on a non-loopback address
/// without `admin.token`.
fn warn_if_open(config: &Config, secrets: &crate::config::Secrets, analyzers: &Gate) {
    let listen = config.analyzers.listen;
    if analyzers_are_open(listen, &analyzers.policy()) {
        if secrets.analyzer_tokens.is_empty() {
            tracing::warn!(
                address = %listen,
                "analyzer listener is not on a loopback address and analyzers.tokens is empty: \
                 any program that reaches it can become an analyzer and receive messages; set \
                 analyzers.tokens and analyzers.seed_handshake_from, or analyzers.tls.client_ca \
                 (mutual TLS), or restrict analyzers.allow"
            );
        } else if config.analyzers.seed_handshake_from.is_none() {
            tracing::warn!(
                address = %listen,
                "analyzer listener is not on a loopback address and analyzers.seed_handshake_from \
                 is not set: any program that reaches it can become an analyzer with the tokenless \
                 seed handshake; set analyzers.seed_handshake_from (an empty list allows none), or \
                 analyzers.tls.client_ca (mutual TLS), or restrict analyzers.allow"
            );
        }
    }
    if let Some(admin) = config.admin.address()
        && !admin.ip().is_loopback()
        && secrets.admin_token.is_none()
    {
        tracing::warn!(
            address = %admin,
            "admin API is not on a loopback address and admin.token is not set: anyone \
             who reaches it can change weights, take analyzers out of routing and read \
             dead letters; set admin.token"
        );
    }
}

/// Whether analyzers from other hosts can connect without a certificate.
fn analyzers_are_open(listen: SocketAddr, policy: &Policy) -> bool {
    !(listen.ip().is_loopback() || policy.mutual || policy.allow.loopback_only())
}

async fn bind(address: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen for {what}s on {address}: {err}"),
        )
    })
}

/// Writes `addresses` as JSON to `path` atomically (temp file, then rename).
pub fn write_ready_file(path: &Path, addresses: &Addresses) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(addresses).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::allow::AllowList;

    #[test]
    fn open_analyzer_listeners_are_told_apart() {
        let anywhere: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let allow = |nets: &[&str]| {
            let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            AllowList::from_config("analyzers.allow", Some(&nets)).unwrap()
        };
        // The defaults: open.
        assert!(analyzers_are_open(anywhere, &Policy::open()));
        assert!(!analyzers_are_open(loopback, &Policy::open()));
        let mutual = Policy {
            mutual: true,
            ..Policy::open()
        };
        assert!(!analyzers_are_open(anywhere, &mutual));
        let local_only = Policy {
            allow: allow(&["127.0.0.1/32", "::1"]),
            ..Policy::open()
        };
        assert!(!analyzers_are_open(anywhere, &local_only));
        let lan = Policy {
            allow: allow(&["10.0.0.0/8"]),
            ..Policy::open()
        };
        assert!(analyzers_are_open(anywhere, &lan));
    }
}
