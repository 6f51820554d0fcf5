//! A load-test profile: the TOML file under `loadtest/profiles/` that says how many
//! emitters and analyzers to simulate, how fast, for how long, what to break and
//! what counts as a pass. Every key is documented in the profile files themselves.

use crate::syslog::EmitterFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::payload::ChecksumKind;

/// Names of the profiles that ship with logdist (`loadtest/profiles/<name>.toml`).
pub const BUILTIN_PROFILES: [&str; 5] = ["basic", "throughput", "chaos", "max", "crash"];

/// Copies of the shipped profiles, compiled in so the binary works from any
/// directory; a file at `loadtest/profiles/<name>.toml` under the working
/// directory takes precedence.
fn embedded_profile(name: &str) -> Option<&'static str> {
    match name {
        "basic" => Some(include_str!("../../../loadtest/profiles/basic.toml")),
        "throughput" => Some(include_str!("../../../loadtest/profiles/throughput.toml")),
        "chaos" => Some(include_str!("../../../loadtest/profiles/chaos.toml")),
        "max" => Some(include_str!("../../../loadtest/profiles/max.toml")),
        "crash" => Some(include_str!("../../../loadtest/profiles/crash.toml")),
        _ => None,
    }
}

/// A parsed profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// How long emitters send (the whole ramp budget for `max`).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Distributor config used when the load test starts logdist itself.
    pub distributor_config: String,
    #[serde(default)]
    pub checksum: ChecksumKind,
    /// `[durability] mode` of the run's distributor config (None: as the
    /// config says). `--durability` overrides it.
    #[serde(default)]
    pub durability: Option<DurabilityMode>,
    /// Pause between "all analyzers connected" and "emitters start".
    #[serde(with = "humantime_serde", default = "default_settle")]
    pub settle: Duration,
    pub emitters: EmitterSettings,
    pub analyzers: Vec<AnalyzerGroup>,
    #[serde(default)]
    pub checks: Checks,
    pub chaos: Option<ChaosSettings>,
    pub ramp: Option<RampSettings>,
    pub crash: Option<CrashSettings>,
}

fn default_settle() -> Duration {
    Duration::from_millis(300)
}

/// How emitters talk to logdist.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitterKind {
    /// Binary frames, open loop, no replies (`emitter.rs`); reconciled exactly once.
    #[default]
    Frames,
    /// NDJSON lines to an `ack = "message"` listener, a bounded window of them
    /// unanswered, reconnecting when the connection is lost (`ack_emitter.rs`);
    /// every line acked `ok` must arrive at least once.
    NdjsonAck,
}

/// `[durability] mode` of logdist.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Messages live in memory only: a crash loses what logdist holds.
    Memory,
    /// An `ok` reply means the message is on disk; a restart redelivers.
    Disk,
}

impl DurabilityMode {
    pub fn name(self) -> &'static str {
        match self {
            DurabilityMode::Memory => "memory",
            DurabilityMode::Disk => "disk",
        }
    }
}

/// `[durability] sync` of logdist in disk mode.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySync {
    /// `ok` after fdatasync: survives power loss.
    Fsync,
    /// `ok` after write(2): survives a crash of logdist, not of the host.
    Write,
}

impl DurabilitySync {
    pub fn name(self) -> &'static str {
        match self {
            DurabilitySync::Fsync => "fsync",
            DurabilitySync::Write => "write",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitterSettings {
    /// Frames (open loop) or NDJSON with acks (closed loop, reconnecting).
    #[serde(default)]
    pub kind: EmitterKind,
    pub count: usize,
    /// Messages per second, per emitter.
    pub rate: f64,
    /// How often an emitter wakes up and writes everything that is due.
    #[serde(with = "humantime_serde", default = "default_tick")]
    pub tick: Duration,
    #[serde(default)]
    pub size: SizeSettings,
    #[serde(default)]
    pub priority: PrioritySettings,
    /// `ndjson_ack` only: at most this many lines written and not yet answered.
    #[serde(default = "default_window")]
    pub window: usize,
    /// `frames` only: the wire format of each emitter, cycled over the
    /// emitters (`["frame", "syslog_octet", "syslog_lf"]` mixes all three).
    #[serde(default = "default_formats")]
    pub formats: Vec<EmitterFormat>,
}

fn default_formats() -> Vec<EmitterFormat> {
    vec![EmitterFormat::Frame]
}

fn default_window() -> usize {
    1000
}

fn default_tick() -> Duration {
    Duration::from_millis(10)
}

/// Payload sizes: log-normal with this mean and coefficient of variation,
/// clamped to `min..=max` (and never below what the header and checksum need).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSettings {
    #[serde(default = "default_size_mean")]
    pub mean: f64,
    #[serde(default = "default_size_cv")]
    pub cv: f64,
    #[serde(default = "default_size_min")]
    pub min: usize,
    #[serde(default = "default_size_max")]
    pub max: usize,
}

fn default_size_mean() -> f64 {
    512.0
}
fn default_size_cv() -> f64 {
    0.3
}
fn default_size_min() -> usize {
    64
}
fn default_size_max() -> usize {
    4096
}

impl Default for SizeSettings {
    fn default() -> Self {
        SizeSettings {
            mean: default_size_mean(),
            cv: default_size_cv(),
            min: default_size_min(),
            max: default_size_max(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityMode {
    /// Every message gets `levels[0]`.
    Single,
    /// Uniformly one of `levels`.
    Random,
    /// One of `levels`, in proportion to `weights`.
    Weighted,
    /// `levels` in turn.
    Cyclic,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrioritySettings {
    pub mode: PriorityMode,
    #[serde(default = "default_levels")]
    pub levels: Vec<u8>,
    #[serde(default)]
    pub weights: Vec<f64>,
}

fn default_levels() -> Vec<u8> {
    vec![3]
}

impl Default for PrioritySettings {
    fn default() -> Self {
        PrioritySettings {
            mode: PriorityMode::Single,
            levels: default_levels(),
            weights: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handshake {
    /// 4-byte big-endian f32 weight; acks as 4-byte control words.
    Seed,
    /// One JSON line `{"id","weight","format","acks"}`; acks as `{"ack":N}` lines.
    Hello,
}

/// What the distributor sends an analyzer: binary frames (the only format a
/// seed-handshake analyzer gets) or NDJSON lines (hello analyzers only).
pub use logdist_wire::AnalyzerFormat;

/// `count` analyzers that share these settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzerGroup {
    #[serde(default = "one")]
    pub count: usize,
    pub weight: f32,
    #[serde(default = "default_handshake")]
    pub handshake: Handshake,
    #[serde(default)]
    pub format: AnalyzerFormat,
    /// Ack (and count as processed) after this many messages.
    #[serde(default = "default_ack_every")]
    pub ack_every: u32,
    /// ...or when this long has passed since the last message with some unacked.
    #[serde(with = "humantime_serde", default = "default_ack_idle")]
    pub ack_idle: Duration,
    /// TEST HOOK: silently drop every Nth message while still acking it (a
    /// broken analyzer). The run must then fail with loss.
    #[serde(default)]
    pub drop_every: Option<u64>,
}

fn one() -> usize {
    1
}
fn default_handshake() -> Handshake {
    Handshake::Seed
}
fn default_ack_every() -> u32 {
    100
}
fn default_ack_idle() -> Duration {
    Duration::from_millis(20)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Check each analyzer's share of messages against its weight.
    #[serde(default = "yes")]
    pub check_shares: bool,
    /// Largest allowed relative deviation |share / expected - 1|.
    #[serde(default = "default_share_tolerance")]
    pub share_tolerance: f64,
    /// Fail when the overall p99 latency exceeds this (optional).
    #[serde(with = "humantime_serde", default)]
    pub max_p99: Option<Duration>,
    /// After emitters stop: how long to wait for every sent message to arrive.
    #[serde(with = "humantime_serde", default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// Report duplicates as a warning instead of a failed invariant.
    #[serde(default)]
    pub allow_duplicates: bool,
}

fn yes() -> bool {
    true
}
fn default_share_tolerance() -> f64 {
    0.01
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            check_shares: true,
            share_tolerance: default_share_tolerance(),
            max_p99: None,
            drain_timeout: default_drain_timeout(),
            allow_duplicates: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChaosAction {
    /// Abrupt close (RST) while holding unacked messages; reconnect after `downtime`.
    Kill,
    /// Stop reading (and acking) for `stall`.
    Stall,
    /// Ack what was processed, close cleanly and reconnect at once.
    Restart,
    /// Cut the link of the analyzer behind one (the last) without FIN or RST
    /// for `partition`, then restore it (needs root and iproute2; skipped
    /// with a message otherwise).
    Partition,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub actions: Vec<ChaosAction>,
    #[serde(with = "humantime_serde")]
    pub downtime: Duration,
    #[serde(with = "humantime_serde")]
    pub stall: Duration,
    #[serde(with = "humantime_serde")]
    pub quiet_tail: Duration,
    /// How long a `partition` cuts the link.
    #[serde(with = "humantime_serde", default = "default_partition")]
    pub partition: Duration,
    #[serde(default = "default_min_events")]
    pub min_events: usize,
}

fn default_partition() -> Duration {
    Duration::from_secs(4)
}

fn default_min_events() -> usize {
    3
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSettings {
    /// Total offered msg/s of the first step.
    pub start_rate: f64,
    /// Each step offers `factor` times the previous one.
    pub factor: f64,
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// A step fails when its p99 latency is above this.
    #[serde(with = "humantime_serde")]
    pub max_p99: Duration,
    /// After each step: how long to wait for its messages to arrive.
    #[serde(with = "humantime_serde", default = "default_step_drain")]
    pub drain_timeout: Duration,
    /// A step fails when the generator offered less than this share of its target.
    #[serde(default = "default_min_offered")]
    pub min_offered: f64,
}

/// `[crash]`: SIGKILL logdist every `interval` and start it again on the same
/// ports and spool directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSettings {
    /// Time from the emitters' start to the first kill, and between kills.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// No kill in the last `quiet_tail` of the run.
    #[serde(with = "humantime_serde", default = "default_crash_quiet_tail")]
    pub quiet_tail: Duration,
    /// How long a restarted logdist may take to write its ready file
    /// (recovering a large spool takes time).
    #[serde(with = "humantime_serde", default = "default_ready_timeout")]
    pub ready_timeout: Duration,
}

fn default_crash_quiet_tail() -> Duration {
    Duration::from_secs(5)
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_step_drain() -> Duration {
    Duration::from_secs(5)
}
fn default_min_offered() -> f64 {
    0.97
}

impl Profile {
    /// Parse and validate profile TOML.
    pub fn parse(text: &str) -> Result<Profile, String> {
        let profile: Profile = toml::from_str(text).map_err(|e| e.to_string())?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile file to use for `name`: `explicit` if given, else
    /// `loadtest/profiles/<name>.toml` under the working directory or the
    /// source tree, else the compiled-in copy. Returns the text and where it came from.
    pub fn load(name: &str, explicit: Option<&Path>) -> Result<(Profile, String), String> {
        if let Some(path) = explicit {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
            let p =
                Profile::parse(&text).map_err(|e| format!("profile {}: {e}", path.display()))?;
            return Ok((p, path.display().to_string()));
        }
        let rel = PathBuf::from("loadtest/profiles").join(format!("{name}.toml"));
        for candidate in [rel.clone(), workspace_root().join(&rel)] {
            if candidate.is_file() {
                let text = std::fs::read_to_string(&candidate)
                    .map_err(|e| format!("cannot read profile {}: {e}", candidate.display()))?;
                let p = Profile::parse(&text)
                    .map_err(|e| format!("profile {}: {e}", candidate.display()))?;
                return Ok((p, candidate.display().to_string()));
            }
        }
        match embedded_profile(name) {
            Some(text) => Profile::parse(text)
                .map(|p| (p, format!("built-in {name}")))
                .map_err(|e| format!("built-in profile {name}: {e}")),
            None => Err(format!(
                "unknown profile {name:?}: expected one of {} or --profile-file",
                BUILTIN_PROFILES.join(", ")
            )),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let e = &self.emitters;
        if e.count == 0 {
            return Err("emitters.count must be at least 1".into());
        }
        if !(e.rate.is_finite() && e.rate >= 0.0) {
            return Err("emitters.rate must be a non-negative number".into());
        }
        if e.tick.is_zero() {
            return Err("emitters.tick must be positive".into());
        }
        if e.formats.is_empty() {
            return Err("emitters.formats must name at least one format".into());
        }
        if e.kind != EmitterKind::Frames && e.formats != default_formats() {
            return Err("emitters.formats applies to kind = \"frames\" only".into());
        }
        if e.window == 0 {
            return Err("emitters.window must be at least 1".into());
        }
        if !(e.size.mean > 0.0 && e.size.cv >= 0.0 && e.size.min <= e.size.max) {
            return Err("emitters.size: need mean > 0, cv >= 0, min <= max".into());
        }
        let pr = &e.priority;
        if pr.levels.is_empty() {
            return Err("emitters.priority.levels must not be empty".into());
        }
        if pr.mode == PriorityMode::Weighted
            && (pr.weights.len() != pr.levels.len()
                || pr.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
                || pr.weights.iter().sum::<f64>() <= 0.0)
        {
            return Err(
                "emitters.priority.weights: one non-negative weight per level, not all zero".into(),
            );
        }
        if self.analyzers.is_empty() || self.analyzers.iter().all(|g| g.count == 0) {
            return Err("at least one analyzer is needed".into());
        }
        for g in &self.analyzers {
            if !(g.weight.is_finite() && g.weight > 0.0) {
                return Err("analyzers.weight must be positive".into());
            }
            if g.ack_every == 0 {
                return Err("analyzers.ack_every must be at least 1".into());
            }
            if g.handshake == Handshake::Seed && g.format == AnalyzerFormat::Ndjson {
                return Err("a seed-handshake analyzer always gets frames; use handshake = \"hello\" for ndjson".into());
            }
            if g.drop_every == Some(0) {
                return Err("analyzers.drop_every must be at least 1".into());
            }
        }
        if self.checks.share_tolerance.is_nan() || self.checks.share_tolerance < 0.0 {
            return Err("checks.share_tolerance must be >= 0".into());
        }
        if let Some(c) = &self.chaos {
            if c.actions.is_empty() {
                return Err("chaos.actions must not be empty".into());
            }
            if c.interval.is_zero() {
                return Err("chaos.interval must be positive".into());
            }
        }
        if let Some(r) = &self.ramp
            && !(r.start_rate > 0.0 && r.factor > 1.0 && !r.step.is_zero())
        {
            return Err("ramp: need start_rate > 0, factor > 1, step > 0".into());
        }
        if self.ramp.is_some() && e.kind != EmitterKind::Frames {
            return Err(
                "ramp: needs emitters.kind = \"frames\" (the ramp measures open-loop senders)"
                    .into(),
            );
        }
        if let Some(c) = &self.crash {
            if c.interval.is_zero() {
                return Err("crash.interval must be positive".into());
            }
            if e.kind != EmitterKind::NdjsonAck {
                return Err(
                    "crash: needs emitters.kind = \"ndjson_ack\" (only acked messages have a \
                     guarantee across a crash, and frame emitters do not reconnect)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Analyzer settings, one entry per simulated analyzer.
    pub fn analyzer_list(&self) -> Vec<AnalyzerGroup> {
        self.analyzers
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.clone(), g.count))
            .collect()
    }

    /// Offered messages per second over all emitters.
    pub fn total_rate(&self) -> f64 {
        self.emitters.rate * self.emitters.count as f64
    }
}

/// The workspace root this binary was built from (for finding configs and
/// profiles when run from elsewhere).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Parse a duration like "10s", "1m30s", "500ms".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        for name in BUILTIN_PROFILES {
            let p = Profile::parse(embedded_profile(name).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.name, name);
        }
    }

    #[test]
    fn builtin_profiles_match_the_issue() {
        let basic = Profile::parse(embedded_profile("basic").unwrap()).unwrap();
        assert_eq!((basic.emitters.count, basic.analyzer_list().len()), (3, 3));
        assert_eq!(basic.emitters.rate, 300.0);
        assert_eq!(basic.duration, Duration::from_secs(60));
        assert_eq!(basic.emitters.priority.mode, PriorityMode::Single);

        let tp = Profile::parse(embedded_profile("throughput").unwrap()).unwrap();
        assert_eq!((tp.emitters.count, tp.analyzer_list().len()), (100, 10));
        assert_eq!(tp.total_rate(), 80_000.0);
        assert_eq!(tp.emitters.priority.mode, PriorityMode::Weighted);

        let chaos = Profile::parse(embedded_profile("chaos").unwrap()).unwrap();
        assert_eq!((chaos.emitters.count, chaos.analyzer_list().len()), (20, 8));
        assert_eq!(chaos.emitters.priority.mode, PriorityMode::Cyclic);
        assert!(chaos.chaos.is_some());
        assert!(!chaos.checks.check_shares);
        let handshakes: Vec<_> = chaos.analyzer_list().iter().map(|a| a.handshake).collect();
        assert!(handshakes.contains(&Handshake::Seed) && handshakes.contains(&Handshake::Hello));

        let max = Profile::parse(embedded_profile("max").unwrap()).unwrap();
        assert!(max.ramp.is_some());
        assert_eq!(max.emitters.kind, EmitterKind::Frames);

        let crash = Profile::parse(embedded_profile("crash").unwrap()).unwrap();
        assert_eq!(crash.emitters.kind, EmitterKind::NdjsonAck);
        assert_eq!(crash.durability, Some(DurabilityMode::Disk));
        assert_eq!(crash.duration, Duration::from_secs(120));
        let c = crash.crash.as_ref().unwrap();
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(crash.checks.allow_duplicates && !crash.checks.check_shares);
        let handshakes: Vec<_> = crash.analyzer_list().iter().map(|a| a.handshake).collect();
        assert!(handshakes.contains(&Handshake::Seed) && handshakes.contains(&Handshake::Hello));
    }

    /// The crash fault needs emitters with acks; the ramp, frames.
    #[test]
    fn emitter_kind_fits_the_fault() {
        let base = |kind: &str| {
            format!(
                "name = \"x\"\nduration = \"5s\"\ndistributor_config = \"c.toml\"\n\
                 [emitters]\nkind = \"{kind}\"\ncount = 1\nrate = 10\n\
                 [[analyzers]]\nweight = 1.0\n"
            )
        };
        let crash = "[crash]\ninterval = \"3s\"\n";
        let ramp = "[ramp]\nstart_rate = 10\nfactor = 2\nstep = \"1s\"\nmax_p99 = \"5ms\"\n";
        let p = Profile::parse(&format!("{}{crash}", base("ndjson_ack"))).unwrap();
        let c = p.crash.unwrap();
        assert_eq!(
            (c.quiet_tail, c.ready_timeout),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
        assert_eq!(p.emitters.window, 1000);
        let err = Profile::parse(&format!("{}{crash}", base("frames"))).unwrap_err();
        assert!(err.contains("ndjson_ack"), "{err}");
        let err = Profile::parse(&format!("{}{ramp}", base("ndjson_ack"))).unwrap_err();
        assert!(err.contains("frames"), "{err}");
        assert!(Profile::parse(&format!("{}{ramp}", base("frames"))).is_ok());
        let err = Profile::parse(&base("tcp")).unwrap_err();
        assert!(err.contains("ndjson_ack"), "{err}");
    }

    #[test]
    fn defaults_fill_in() {
        let p = Profile::parse(
            r#"
            name = "x"
            duration = "5s"
            distributor_config = "configs/basic.toml"
            [emitters]
            count = 1
            rate = 10
            [[analyzers]]
            weight = 1.0
            "#,
        )
        .unwrap();
        assert_eq!(p.emitters.tick, Duration::from_millis(10));
        assert_eq!(p.emitters.size.mean, 512.0);
        assert_eq!(p.emitters.priority.mode, PriorityMode::Single);
        let a = &p.analyzer_list()[0];
        assert_eq!(
            (a.ack_every, a.handshake, a.drop_every),
            (100, Handshake::Seed, None)
        );
        assert_eq!(p.checks.share_tolerance, 0.01);
        assert_eq!(p.checksum, ChecksumKind::Sha256);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let base = r#"
            name = "x"
            duration = "5s"
            distributor_config = "c.toml"
            [emitters]
            count = 1
            rate = 10
        "#;
        let err = Profile::parse(&format!("{base}\n[[analyzers]]\nweight = 1.0\nbogus = 1\n"))
            .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = Profile::parse(&format!("{base}\n[[analyzers]]\nweight = 0.0\n")).unwrap_err();
        assert!(err.contains("weight"), "{err}");
        let err = Profile::parse(&format!(
            "{base}\n[[analyzers]]\nweight = 1.0\nhandshake = \"seed\"\nformat = \"ndjson\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("hello"), "{err}");
        let err = Profile::parse(base).unwrap_err();
        assert!(err.contains("analyzers"), "{err}");
    }
}
