//! Binding the listeners, running them, and shutting down without losing anything.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logdist_router::Router;
use logdist_wire::{IngestLimits, PriorityTable};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::analyzer;
use crate::analyzer::directory::Directory;
use crate::config::{AckMode, Config, MetricsConfig};
use crate::dead_letter::DeadLetterFile;
use crate::delivery::Redelivery;
use crate::emitter::EmitterConnection;
use crate::holding::release_held;
use crate::metrics_csv;
use crate::reload::{ReloadHandle, Reloader};
use crate::shutdown::Shutdown;
use crate::stats::{Stats, StatsSnapshot};

/// State every connection task shares.
pub struct Shared {
    pub router: Arc<Router>,
    pub stats: Arc<Stats>,
    pub directory: Directory,
    pub redelivery: Redelivery,
    pub shutdown: Shutdown,
    pub limits: IngestLimits,
    pub priorities: Arc<PriorityTable>,
    pub queue_capacity: usize,
    pub window: usize,
    pub ack_timeout: Duration,
    pub probe_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long draining may take: at shutdown, and for an analyzer removed
    /// from the config.
    pub shutdown_grace: Duration,
    /// When the server was bound, for uptimes.
    pub started: Instant,
    /// Where dead letters are written (the admin API reads them back).
    pub dead_letter_path: PathBuf,
}

/// A distributor whose listeners are bound (so their ports are known) but not yet serving.
pub struct Server {
    shared: Arc<Shared>,
    emitter_listeners: Vec<(TcpListener, AckMode)>,
    analyzer_listener: TcpListener,
    admin_listener: Option<TcpListener>,
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
}

/// What shutdown left behind.
#[derive(Debug)]
pub struct ShutdownReport {
    pub stats: StatsSnapshot,
}

impl Server {
    /// Binds every listener of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Server> {
        let mut emitter_listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let bound = bind(listener.address, "emitter").await?;
            emitter_listeners.push((bound, listener.ack));
        }
        let analyzer_listener = bind(config.analyzers.listen, "analyzer").await?;
        let admin_listener = match config.admin.address() {
            Some(address) => Some(bind(address, "admin HTTP request").await?),
            None => None,
        };

        let stats = Arc::new(Stats::default());
        let router = Arc::new(Router::with_holding(config.delivery.hold_capacity));
        let shutdown = Shutdown::default();
        let dead_letters =
            DeadLetterFile::start(config.delivery.dead_letter_path.clone(), stats.clone());
        let redelivery = Redelivery::new(
            router.clone(),
            dead_letters.handle(),
            stats.clone(),
            config.delivery.max_attempts,
            shutdown.hard_stop.clone(),
        );
        let priorities =
            PriorityTable::new(config.priorities.levels.clone(), config.priorities.default);
        let directory = Directory::new(stats.clone(), router.clone());
        let shared = Arc::new(Shared {
            router,
            directory,
            stats,
            redelivery,
            shutdown,
            limits: IngestLimits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_line_bytes: config.limits.max_line_bytes,
                max_decompressed_bytes: config.limits.max_decompressed_bytes,
            },
            priorities: Arc::new(priorities),
            queue_capacity: config.analyzers.queue_capacity,
            window: config.analyzers.window,
            ack_timeout: config.analyzers.ack_timeout,
            probe_interval: config.analyzers.probe_interval,
            reconnect_min: config.analyzers.reconnect_min,
            reconnect_max: config.analyzers.reconnect_max,
            shutdown_grace: config.delivery.shutdown_grace,
            started: Instant::now(),
            dead_letter_path: config.delivery.dead_letter_path.clone(),
        });
        let reloader = Arc::new(Reloader::new(shared.clone(), config.clone()));
        Ok(Server {
            shared,
            emitter_listeners,
            analyzer_listener,
            admin_listener,
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
                .map(|(l, ack)| ListenerAddress {
                    address: local(l),
                    ack: *ack,
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
        self.shared.stats.clone()
    }

    /// The analyzer registry and routing table.
    pub fn router(&self) -> Arc<Router> {
        self.shared.router.clone()
    }

    /// Shared state, for in-process tests and the admin API.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `signal` completes, then shuts down gracefully: stop
    /// accepting, route what emitters already sent, drain analyzer queues for up
    /// to the grace period, and dead-letter whatever is still held.
    pub async fn run(self, signal: impl Future<Output = ()>) -> ShutdownReport {
        let shared = self.shared;
        let emitters = TaskTracker::new();
        let analyzers = self.reloader.tasks();
        let permits = Arc::new(Semaphore::new(self.max_connections));

        let mut acceptors = Vec::new();
        for (listener, ack) in self.emitter_listeners {
            acceptors.push(tokio::spawn(accept_emitters(
                listener,
                ack,
                shared.clone(),
                emitters.clone(),
                permits.clone(),
            )));
        }
        acceptors.push(tokio::spawn(accept_analyzers(
            self.analyzer_listener,
            shared.clone(),
            analyzers.clone(),
        )));
        self.reloader.start_statics().await;
        if let Some(listener) = self.admin_listener {
            // Tracked with the emitters: an HTTP ingest request is an emitter too.
            emitters.spawn(admin::serve(listener, shared.clone(), emitters.clone()));
        }
        let holding = tokio::spawn(release_held(shared.clone(), self.hold_timeout));
        let csv = metrics_csv::start(&self.metrics, shared.clone());

        signal.await;
        let grace = shared.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(?grace, "shutting down: no new connections, draining queues");
        let hard_stop = shared.shutdown.hard_stop.clone();
        let grace_timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            hard_stop.cancel();
        });

        shared.shutdown.stop_accepting.cancel();
        for acceptor in acceptors {
            let _ = acceptor.await;
        }
        emitters.close();
        emitters.wait().await;
        shared.shutdown.drain.cancel();
        analyzers.close();
        analyzers.wait().await;
        // Every session is gone: whatever is still held or being rerouted has
        // nowhere to go but the dead-letter file.
        shared.shutdown.hard_stop.cancel();
        grace_timer.abort();
        let _ = holding.await;
        shared.redelivery.settled().await;
        if let Some(csv) = csv {
            csv.finish().await;
        }

        let dead_letters = self.dead_letters;
        if tokio::task::spawn_blocking(move || dead_letters.close())
            .await
            .is_err()
        {
            tracing::error!("dead-letter writer did not close cleanly");
        }
        ShutdownReport {
            stats: shared.stats.snapshot(),
        }
    }
}

async fn bind(address: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen for {what}s on {address}: {err}"),
        )
    })
}

async fn accept_emitters(
    listener: TcpListener,
    ack: AckMode,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
) {
    let address = listener.local_addr().ok();
    tracing::info!(?address, ?ack, "listening for emitters");
    while let Some((stream, peer)) = accept(&listener, &shared).await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.stats.connections_refused.add(1);
            tracing::warn!(%peer, "emitter connection refused: limits.max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = EmitterConnection::new(stream, peer, ack, &shared);
        let shared = shared.clone();
        tasks.spawn(async move {
            connection.run(shared).await;
            drop(permit);
        });
    }
}

async fn accept_analyzers(listener: TcpListener, shared: Arc<Shared>, tasks: TaskTracker) {
    let address = listener.local_addr().ok();
    tracing::info!(?address, "listening for analyzers");
    while let Some((stream, peer)) = accept(&listener, &shared).await {
        tracing::debug!(%peer, "analyzer connection");
        tasks.spawn(analyzer::serve_dial_in(stream, shared.clone()));
    }
}

/// The next connection, or `None` once shutdown stops accepting. Accept errors
/// (out of file descriptors, mostly) pass: log, pause, go on.
async fn accept(listener: &TcpListener, shared: &Shared) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(err) => {
                    tracing::error!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shared.shutdown.stop_accepting.cancelled() => return None,
        }
    }
}

/// Writes `addresses` as JSON to `path` atomically (temp file, then rename).
pub fn write_ready_file(path: &Path, addresses: &Addresses) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(addresses).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
