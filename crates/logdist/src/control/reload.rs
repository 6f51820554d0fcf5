//! Applying a changed config to a running distributor (SIGHUP).
//!
//! Only the static analyzers change at run time: a new weight is applied (or
//! remembered, see [`Directory::set_weight`](crate::delivery::directory::Directory::set_weight)),
//! an added analyzer starts being dialed, a removed one is drained (weight 0,
//! then its session ends once what it holds is acknowledged, or after the
//! grace period) and forgotten, and one whose address, format or acks changed
//! is restarted the same way (so is one whose `tls` changed). Emitter
//! connections and every other analyzer connection are untouched.
//!
//! Certificates, keys and CA files are read again, for every listener and
//! static analyzer, and apply to the connections that come next (established
//! ones keep their TLS sessions); `allow` lists apply at once too. Turning a
//! listener's TLS on or off, and every other section (listener addresses,
//! limits, ...), needs a restart; a reload that changes them says so in the
//! log and applies the rest. A config that does not validate, or names a
//! certificate or key that does not load, changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, StaticAnalyzerConfig};
use crate::delivery::context::DeliveryContext;
use crate::delivery::directory::Directory;
use crate::delivery::static_link::run_static;
use crate::transport::tls::ClientTls;
use crate::transport::{Dialer, Gates};

/// The running static analyzers and the config they came from.
pub struct Reloader {
    /// What static analyzer links run with.
    delivery: Arc<DeliveryContext>,
    /// The server's analyzer tasks, so shutdown waits for reloaded ones too.
    tasks: TaskTracker,
    /// Every listener's allow list and TLS.
    gates: Arc<Gates>,
    state: Mutex<State>,
}

struct State {
    config: Config,
    links: BTreeMap<String, StaticLink>,
    /// The TLS of the startup config's static analyzers, read by
    /// [`Reloader::new`], until [`Reloader::start_statics`] uses it.
    initial: BTreeMap<String, Option<ClientTls>>,
}

/// One static analyzer's task.
struct StaticLink {
    config: StaticAnalyzerConfig,
    dialer: Arc<Dialer>,
    removed: CancellationToken,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Address, format or acks changed: reconnected.
    pub restarted: Vec<String>,
    pub reweighted: Vec<String>,
    /// Config sections that changed but only apply after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the distributor is shutting down")]
    ShuttingDown,
}

impl Reloader {
    /// Reads the static analyzers' TLS files, then lists them in the
    /// directory at once (unhealthy until reached), so they show before
    /// their links start. `gates` are the running listeners'.
    pub fn new(
        delivery: Arc<DeliveryContext>,
        config: Config,
        gates: Arc<Gates>,
    ) -> Result<Self, ConfigError> {
        let initial = static_tls(&config)?;
        for analyzer in &config.analyzers.statics {
            list(&delivery.directory, analyzer);
        }
        Ok(Reloader {
            delivery,
            tasks: TaskTracker::new(),
            gates,
            state: Mutex::new(State {
                config,
                links: BTreeMap::new(),
                initial,
            }),
        })
    }

    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Starts the static analyzers of the config the server was bound with.
    pub async fn start_statics(&self) {
        let mut state = self.state.lock().await;
        let mut initial = std::mem::take(&mut state.initial);
        for config in state.config.analyzers.statics.clone() {
            let tls = initial.remove(&config.id).flatten();
            self.start(&mut state, config, tls);
        }
    }

    fn start(&self, state: &mut State, config: StaticAnalyzerConfig, tls: Option<ClientTls>) {
        list(&self.delivery.directory, &config);
        let removed = CancellationToken::new();
        let dialer = Dialer::new(tls);
        let task = self.tasks.spawn(run_static(
            config.clone(),
            dialer.clone(),
            self.delivery.clone(),
            removed.clone(),
        ));
        state.links.insert(
            config.id.clone(),
            StaticLink {
                config,
                dialer,
                removed,
                task,
            },
        );
    }

    /// Stops one static analyzer and waits until its session has ended and
    /// handed back what it held.
    async fn stop(&self, state: &mut State, id: &str) {
        if let Some(link) = state.links.remove(id) {
            link.removed.cancel();
            if let Err(err) = link.task.await {
                tracing::error!(analyzer = id, %err, "static analyzer task failed");
            }
        }
    }

    async fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        config.validate()?;
        let mut state = self.state.lock().await;
        if self.delivery.shutdown.stop_accepting.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        // Every file first: a certificate that does not load changes nothing.
        let gates = self.gates.prepare(&config)?;
        let mut tls = static_tls(&config)?;
        let mut needs_restart = restart_only_changes(&state.config, &config);
        for key in &gates.tls_switched {
            tracing::warn!(key = %key, "TLS turned on or off: that applies only after a restart");
            let section = if key.starts_with("listeners") {
                "listeners"
            } else if key.starts_with("analyzers") {
                "analyzers"
            } else {
                "admin"
            };
            if !needs_restart.contains(&section) {
                needs_restart.push(section);
            }
        }
        gates.apply();
        let mut summary = ReloadSummary {
            needs_restart,
            ..ReloadSummary::default()
        };
        let wanted: BTreeMap<&str, &StaticAnalyzerConfig> = config
            .analyzers
            .statics
            .iter()
            .map(|s| (s.id.as_str(), s))
            .collect();
        let running: Vec<String> = state.links.keys().cloned().collect();
        for id in running {
            if !wanted.contains_key(id.as_str()) {
                self.stop(&mut state, &id).await;
                self.delivery.directory.forget(&id);
                summary.removed.push(id);
            }
        }
        for (id, new) in wanted {
            let old = state.links.get(id).map(|link| link.config.clone());
            let tls = tls.remove(id).flatten();
            match old {
                None => {
                    self.start(&mut state, new.clone(), tls);
                    summary.added.push(id.to_string());
                }
                Some(old) if !same_link(&old, new) => {
                    self.stop(&mut state, id).await;
                    // Draining set its weight to 0; the new link starts with
                    // the configured one (its counters and override stay).
                    let _ = self
                        .delivery
                        .directory
                        .set_weight(id, new.weight, "config reloaded");
                    self.start(&mut state, new.clone(), tls);
                    summary.restarted.push(id.to_string());
                }
                Some(old) if old.weight != new.weight => {
                    if let Err(err) =
                        self.delivery
                            .directory
                            .set_weight(id, new.weight, "config reloaded")
                    {
                        // Validation checked the weight; the analyzer may just
                        // have been forgotten in between. Its next start has it.
                        tracing::warn!(analyzer = id, %err, "reloaded weight not applied");
                    }
                    if let Some(link) = state.links.get_mut(id) {
                        link.config.weight = new.weight;
                        // Certificates read again: the next connection uses them.
                        link.dialer.replace(tls);
                    }
                    summary.reweighted.push(id.to_string());
                }
                Some(_) => {
                    if let Some(link) = state.links.get(id) {
                        link.dialer.replace(tls);
                    }
                }
            }
        }
        state.config = config;
        Ok(summary)
    }
}

/// Whether two static analyzer configs differ only in weight (or not at all).
fn same_link(a: &StaticAnalyzerConfig, b: &StaticAnalyzerConfig) -> bool {
    a.address == b.address && a.format == b.format && a.acks == b.acks && a.tls == b.tls
}

/// Every static analyzer's TLS client, files read, by id.
fn static_tls(config: &Config) -> Result<BTreeMap<String, Option<ClientTls>>, ConfigError> {
    config
        .analyzers
        .statics
        .iter()
        .enumerate()
        .map(|(i, analyzer)| Ok((analyzer.id.clone(), Dialer::load_tls(i, analyzer)?)))
        .collect()
}

/// Lists a static analyzer in the directory (a no-op if it is listed).
fn list(directory: &Directory, analyzer: &StaticAnalyzerConfig) {
    let id: Arc<str> = Arc::from(analyzer.id.as_str());
    directory.add_static(&id, &analyzer.address, analyzer.weight);
}

/// The sections of `new` that differ from `old` and only apply at startup.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    // Destructured so that a new section cannot be forgotten here.
    let Config {
        listeners,
        analyzers,
        delivery,
        limits,
        priorities,
        admin,
        metrics,
        runtime,
    } = new;
    let mut changed = Vec::new();
    // What a reload applies itself (static analyzers, allow lists, TLS
    // files; TLS on or off is the gates' to tell) is no restart's business.
    let mut old_listeners = old.listeners.clone();
    for (old, new) in old_listeners.iter_mut().zip(listeners) {
        old.allow.clone_from(&new.allow);
        old.tls.clone_from(&new.tls);
    }
    let mut old_analyzers = old.analyzers.clone();
    old_analyzers.statics.clone_from(&analyzers.statics);
    old_analyzers.allow.clone_from(&analyzers.allow);
    old_analyzers.tls.clone_from(&analyzers.tls);
    let mut old_admin = old.admin.clone();
    old_admin.allow.clone_from(&admin.allow);
    old_admin.tls.clone_from(&admin.tls);
    let sections = [
        ("listeners", old_listeners != *listeners),
        ("analyzers", old_analyzers != *analyzers),
        ("delivery", old.delivery != *delivery),
        ("limits", old.limits != *limits),
        ("priorities", old.priorities != *priorities),
        ("admin", old_admin != *admin),
        ("metrics", old.metrics != *metrics),
        ("runtime", old.runtime != *runtime),
    ];
    for (name, differs) in sections {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// Applies configs to a running server; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle(Arc<Reloader>);

impl ReloadHandle {
    pub fn new(reloader: Arc<Reloader>) -> Self {
        ReloadHandle(reloader)
    }

    /// Validates `config` and applies its static analyzers; on error nothing
    /// changes. Logs what it did either way.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        match self.0.apply(config).await {
            Ok(summary) => {
                tracing::info!(
                    added = ?summary.added, removed = ?summary.removed,
                    restarted = ?summary.restarted, reweighted = ?summary.reweighted,
                    "config reloaded"
                );
                if !summary.needs_restart.is_empty() {
                    tracing::warn!(
                        sections = ?summary.needs_restart,
                        "these config sections changed but only apply after a restart"
                    );
                }
                Ok(summary)
            }
            Err(err) => {
                tracing::error!(%err, "config reload rejected; the running config stays");
                Err(err)
            }
        }
    }
}
