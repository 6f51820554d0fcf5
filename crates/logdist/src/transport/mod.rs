//! Transport: how connections are admitted and carried, below every stage.
//!
//! - [`allow`]: the source networks a listener accepts (`allow`);
//! - [`tls`]: rustls server and client configurations from the config's
//!   `tls` tables, every file read and checked;
//! - [`gate`]: a listener's checks, allow list at accept then the TLS
//!   handshake in the connection's task, with refusals counted and logged;
//! - [`stream`]: the connection itself, plain TCP or TLS, and its halves;
//! - [`dial`]: dialing out (static analyzers), TLS included;
//! - [`http`]: a gated listener for the admin API's `axum::serve`.
//!
//! Imports only [`crate::config`], [`crate::stats`] and [`crate::refusal`].
//! Certificates, keys and CAs are reloaded on SIGHUP ([`Gates::prepare`]):
//! new connections get the new ones, established ones keep theirs.

pub mod allow;
pub mod dial;
pub mod gate;
pub mod http;
pub mod socket;
pub mod stream;
pub mod tls;

use std::sync::Arc;

pub use dial::Dialer;
pub use gate::{Admission, Gate, Policy};
pub use stream::{ReadHalf, Stream, WriteHalf};

use crate::config::{Config, ConfigError, ServerTlsConfig};
use crate::refusal::Listener;
use crate::stats::Stats;

/// The gate of every listener of a server.
pub struct Gates {
    pub emitters: Vec<Arc<Gate>>,
    pub analyzers: Arc<Gate>,
    pub admin: Arc<Gate>,
}

impl Gates {
    /// Every listener's policy as `config` has it, certificate files read.
    pub fn load(config: &Config, stats: &Arc<Stats>) -> Result<Gates, ConfigError> {
        let mut emitters = Vec::with_capacity(config.listeners.len());
        for (i, listener) in config.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            let policy = Policy::load(&at, listener.allow.as_deref(), listener.tls.as_ref(), &[])?;
            emitters.push(Gate::new(
                Listener::Emitter,
                at,
                listener.address.to_string(),
                policy,
                stats.clone(),
            ));
        }
        let a = &config.analyzers;
        let policy = Policy::load("analyzers", a.allow.as_deref(), a.tls.as_ref(), &[])?;
        let analyzers = Gate::new(
            Listener::Analyzer,
            "analyzers",
            a.listen.to_string(),
            policy,
            stats.clone(),
        );
        let admin = &config.admin;
        // An admin API that is off has no files to read.
        let policy = match admin.address() {
            Some(_) => Policy::load(
                "admin",
                admin.allow.as_deref(),
                admin.tls.as_ref(),
                tls::HTTP_ALPN,
            )?,
            None => Policy::open(),
        };
        let admin = Gate::new(
            Listener::Admin,
            "admin",
            admin.listen.clone(),
            policy,
            stats.clone(),
        );
        Ok(Gates {
            emitters,
            analyzers,
            admin,
        })
    }

    /// Reads the transport settings of `config` for a reload, every file
    /// included; nothing changes until [`GatesReload::apply`]. A listener
    /// whose address changed keeps its policy (the address needs a restart);
    /// one whose TLS was turned on or off keeps its TLS as it is (that needs
    /// a restart too), though the new files are still checked.
    pub fn prepare(&self, config: &Config) -> Result<GatesReload, ConfigError> {
        let mut reload = GatesReload::default();
        for (i, (gate, listener)) in self.emitters.iter().zip(&config.listeners).enumerate() {
            if gate.address() != listener.address.to_string() {
                continue;
            }
            let at = format!("listeners[{i}]");
            reload.prepare(
                gate,
                &at,
                listener.allow.as_deref(),
                listener.tls.as_ref(),
                &[],
            )?;
        }
        let a = &config.analyzers;
        if self.analyzers.address() == a.listen.to_string() {
            reload.prepare(
                &self.analyzers,
                "analyzers",
                a.allow.as_deref(),
                a.tls.as_ref(),
                &[],
            )?;
        }
        let admin = &config.admin;
        if admin.address().is_some() && self.admin.address() == admin.listen {
            reload.prepare(
                &self.admin,
                "admin",
                admin.allow.as_deref(),
                admin.tls.as_ref(),
                tls::HTTP_ALPN,
            )?;
        }
        Ok(reload)
    }
}

/// New policies, read and checked, waiting to be put in force.
#[derive(Default)]
pub struct GatesReload {
    policies: Vec<(Arc<Gate>, Policy)>,
    /// The `tls` keys turned on or off, which only a restart applies.
    pub tls_switched: Vec<String>,
}

impl GatesReload {
    fn prepare(
        &mut self,
        gate: &Arc<Gate>,
        at: &str,
        allow: Option<&[String]>,
        tls: Option<&ServerTlsConfig>,
        alpn: &[&[u8]],
    ) -> Result<(), ConfigError> {
        let mut policy = Policy::load(at, allow, tls, alpn)?;
        if policy.tls.is_some() != gate.is_tls() {
            self.tls_switched.push(format!("{at}.tls"));
            let running = gate.policy();
            policy.tls.clone_from(&running.tls);
            policy.mutual = running.mutual;
        }
        self.policies.push((gate.clone(), policy));
        Ok(())
    }

    /// Puts every prepared policy in force.
    pub fn apply(self) {
        for (gate, policy) in self.policies {
            gate.replace(policy);
        }
    }
}
