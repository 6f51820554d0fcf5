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
//! ones keep their TLS sessions); `allow` lists apply at once too. Access
//! settings change too, for the connections and requests that follow:
//! `analyzers.tokens` (with `tokens_file` read again and
//! `LOGDIST_ANALYZER_TOKENS`), `analyzers.seed_handshake_from`,
//! `analyzers.max_weight` (weights already set stay) and `admin.token` (with
//! `token_file`, `LOGDIST_ADMIN_TOKEN`). Established analyzer connections
//! keep flowing whatever they authenticated with.
//!
//! Turning a listener's TLS on or off, and every other section or key
//! (listener addresses, limits, `admin.listen`, `admin.max_body_bytes`, ...),
//! needs a restart; a reload that changes them says so in the log and
//! applies the rest. A config that does not validate, or names a
//! certificate, key or token file that does not load, changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AdminConfig, AnalyzersConfig, Config, ConfigError, StaticAnalyzerConfig};
use crate::control::admin::guard::AdminAuth;
use crate::delivery::access::{AccessPolicy, TokenSet};
use crate::delivery::context::DeliveryContext;
use crate::delivery::directory::Directory;
use crate::delivery::static_link::run_static;
use crate::transport::tls::ClientTls;
use crate::transport::{Dialer, Gates};

/// The running static analyzers and the config they came from.
pub struct Reloader {
    /// What static analyzer links run with.
    delivery: Arc<DeliveryContext>,
    /// The admin API's token.
    admin_auth: Arc<AdminAuth>,
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
        admin_auth: Arc<AdminAuth>,
        config: Config,
        gates: Arc<Gates>,
    ) -> Result<Self, ConfigError> {
        let initial = static_tls(&config)?;
        for analyzer in &config.analyzers.statics {
            list(&delivery.directory, analyzer);
        }
        Ok(Reloader {
            delivery,
            admin_auth,
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
        let secrets = config.secrets()?;
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
        // Access next, so the static analyzers' weights below are checked
        // against the new maximum.
        self.delivery.access.set(AccessPolicy {
            tokens: TokenSet::new(&secrets.analyzer_tokens),
            seed_from: config.analyzers.seed_networks(),
        });
        self.delivery
            .directory
            .set_max_weight(config.analyzers.max_weight);
        self.admin_auth.set(secrets.admin_token.as_ref());
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
        durability,
    } = new;
    let mut changed = Vec::new();
    // What a reload applies itself (static analyzers, allow lists, TLS
    // files, access settings; TLS on or off is the gates' to tell) is no
    // restart's business: those keys are taken from `new`, the rest compare.
    let mut old_listeners = old.listeners.clone();
    for (old, new) in old_listeners.iter_mut().zip(listeners) {
        old.allow.clone_from(&new.allow);
        old.tls.clone_from(&new.tls);
    }
    let AnalyzersConfig {
        statics,
        allow,
        tls,
        tokens,
        tokens_file,
        seed_handshake_from,
        max_weight,
        ..
    } = analyzers;
    let old_analyzers = AnalyzersConfig {
        statics: statics.clone(),
        allow: allow.clone(),
        tls: tls.clone(),
        tokens: tokens.clone(),
        tokens_file: tokens_file.clone(),
        seed_handshake_from: seed_handshake_from.clone(),
        max_weight: *max_weight,
        ..old.analyzers.clone()
    };
    let AdminConfig {
        token,
        token_file,
        allow,
        tls,
        ..
    } = admin;
    let old_admin = AdminConfig {
        token: token.clone(),
        token_file: token_file.clone(),
        allow: allow.clone(),
        tls: tls.clone(),
        ..old.admin.clone()
    };
    let sections = [
        ("listeners", old_listeners != *listeners),
        ("analyzers", old_analyzers != *analyzers),
        ("delivery", old.delivery != *delivery),
        ("limits", old.limits != *limits),
        ("priorities", old.priorities != *priorities),
        ("admin", old_admin != *admin),
        ("metrics", old.metrics != *metrics),
        ("runtime", old.runtime != *runtime),
        ("durability", old.durability != *durability),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn access_keys_apply_on_reload_and_the_rest_needs_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.analyzers.tokens = vec![Secret::new("t")];
        new.analyzers.tokens_file = Some("/etc/tokens".into());
        new.analyzers.seed_handshake_from = Some(vec!["10.0.0.0/8".to_string()]);
        new.analyzers.max_weight = 5.0;
        new.admin.token = Some(Secret::new("a"));
        new.admin.token_file = Some("/etc/admin".into());
        assert!(restart_only_changes(&old, &new).is_empty());
        new.admin.max_body_bytes = 1;
        new.analyzers.window = 1;
        assert_eq!(restart_only_changes(&old, &new), ["analyzers", "admin"]);
    }
}
