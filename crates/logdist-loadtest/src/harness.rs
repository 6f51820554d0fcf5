//! The simulated world of a run: start logdist (or use --target), connect the
//! analyzers, start the emitters, and then wait, sample the timeline every
//! second, drain, settle and tear down as the runner (or the ramp) asks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use logdist_net::{TlsClient, TlsNames};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack_emitter::{self, AckEmitterConfig, AckStatus};
use crate::analyzer::{self, AnalyzerCommand, AnalyzerContext, AnalyzerHandle};
use crate::distributor_process::{
    self, DistributorProcess, Durability, Overlay, StopOutcome, log_tail,
};
use crate::emitter::{self, EmitterConfig, EmitterShared, SizeModel};
use crate::partition::Island;
use crate::payload::{ChecksumKind, EmitterNaming};
use crate::priority::PriorityPlan;
use crate::profile::{AnalyzerGroup, DurabilityMode, DurabilitySync, EmitterKind, Profile};
use crate::recorder::Recorder;
use crate::relay::RelayProcess;
use crate::report::DistributorStats;
use crate::timeline::{CountersAt, MessageCosts, Progress, Sampler, TimelineRow};

/// Upper bound on the quiet period after the final drain.
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// Everything a run needs besides the profile.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub profile: Profile,
    pub profile_source: String,
    /// How long emitters send (the profile's duration unless shortened).
    pub duration: Duration,
    /// Use an already running distributor: (emitter address, analyzer address).
    pub target: Option<(SocketAddr, SocketAddr)>,
    pub logdist_bin: Option<PathBuf>,
    /// Parent of the per-run results directory.
    pub results_root: PathBuf,
    pub checksum: ChecksumKind,
    pub seed: u64,
    pub progress: bool,
    pub tls: TlsOptions,
    /// Put in the analyzers' JSON hellos (`token`).
    pub analyzer_token: Option<String>,
    /// The partition fault's namespaces (this process already runs in its
    /// world namespace), when the schedule has the fault and it can run.
    pub island: Option<Arc<Island>>,
    /// Why a `partition` in the schedule was skipped.
    pub partition_skipped: Option<String>,
    /// `--durability`: logdist's `[durability] mode` (else the profile's).
    pub durability: Option<DurabilityMode>,
    /// `--durability-sync`: its `[durability] sync`.
    pub durability_sync: Option<DurabilitySync>,
    /// `--baseline`: run the ramp against the tester's relay first.
    pub baseline: Baseline,
}

/// `--baseline`: what else a ramp profile runs against, before logdist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Only logdist.
    #[default]
    None,
    /// The load tester's bare relay (`relay.rs`) first, then logdist.
    Relay,
}

/// What a harness sends through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemUnderTest {
    /// logdist: started by the run, or the running one of `--target`.
    Logdist,
    /// The bare relay of `--baseline relay`, started by the run.
    Relay,
}

/// TLS for the run: clients for the emitters and the analyzers (None: plain
/// TCP), or a directory of certificates that puts logdist's listeners and
/// both sides on mutual TLS (`--tls-dir`).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub emitters: Option<TlsClient>,
    pub analyzers: Option<TlsClient>,
    /// `--tls-dir`: used only when the run starts logdist.
    pub dir: Option<PathBuf>,
    /// `--tls-server-name` with `--tls-dir`.
    pub server_name: Option<String>,
}

/// The simulated world of a run, set up and ready to send.
pub struct Harness {
    pub profile: Profile,
    pub duration: Duration,
    pub results_dir: PathBuf,
    pub distributor: Option<DistributorProcess>,
    /// The relay, when this harness measures the baseline.
    pub relay: Option<RelayProcess>,
    /// How the relay stopped, and its peak RSS (set by `teardown`).
    pub relay_end: Option<(Option<f64>, StopOutcome)>,
    /// The binary, when the run started logdist (a crash run starts it again).
    pub logdist_bin: Option<PathBuf>,
    /// logdist's `[durability]`, when the run started it.
    pub durability: Option<Durability>,
    pub emitter_addr: SocketAddr,
    pub analyzer_addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    pub analyzers: Vec<AnalyzerHandle>,
    pub analyzer_settings: Vec<AnalyzerGroup>,
    pub emitters: Vec<Arc<EmitterShared>>,
    /// `ndjson_ack` emitters: connection and first-`ok` times (empty for frames).
    pub ack_status: Vec<Arc<AckStatus>>,
    pub emitter_ids: Vec<String>,
    emitter_tasks: Vec<JoinHandle<()>>,
    stop_emitters: CancellationToken,
    pub epoch: Instant,
    sampler: Sampler,
    next_sample: Instant,
    pub timeline: Vec<TimelineRow>,
    /// The counters when the emitters started.
    run_start: CountersAt,
    /// Per-message costs from the emitters' start to the end (set by `teardown`).
    pub run_costs: MessageCosts,
    /// Why the distributor's system calls were not counted (set by `teardown`).
    pub syscalls_unavailable: Option<String>,
    progress: Progress,
    pub aborted: Option<String>,
    pub naming: EmitterNaming,
    /// Cancelled on Ctrl-C: the run stops early but still stops logdist and reports.
    interrupted: CancellationToken,
    pub interrupted_note: Option<String>,
}

/// Create `<root>/<profile>-<UTC time>/` (with a suffix if it exists).
pub fn create_results_dir(root: &Path, profile: &str) -> Result<PathBuf, String> {
    // Absolute, because logdist runs with the results directory as its cwd.
    let root = &std::path::absolute(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "-");
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    for n in 0..1000 {
        let name = if n == 0 {
            format!("{profile}-{stamp}")
        } else {
            format!("{profile}-{stamp}-{n}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err("cannot find a free results directory name".into())
}

impl Harness {
    /// Start (or find) the distributor, or start the relay, connect
    /// analyzers and emitters; results go to `results_dir`. The emitters
    /// start sending at `rate_per_emitter` right away (0 = paused).
    pub async fn setup(
        opts: &RunOptions,
        rate_per_emitter: f64,
        system: SystemUnderTest,
        results_dir: &Path,
    ) -> Result<Harness, String> {
        enum Target {
            Running(SocketAddr, SocketAddr),
            Start(PathBuf),
            Relay,
        }
        let profile = opts.profile.clone();
        let results_dir = results_dir.to_path_buf();
        let target = match (system, opts.target) {
            (SystemUnderTest::Relay, _) => Target::Relay,
            (SystemUnderTest::Logdist, Some((e, a))) => Target::Running(e, a),
            (SystemUnderTest::Logdist, None) => Target::Start(distributor_process::find_binary(
                opts.logdist_bin.as_deref(),
            )?),
        };

        let mut tls = opts.tls.clone();
        let logdist_bin = match &target {
            Target::Start(bin) => Some(bin.clone()),
            Target::Running(..) | Target::Relay => None,
        };
        let mut relay = None;
        let (distributor, emitter_addr, analyzer_addr, max_frame_bytes) = match target {
            Target::Running(e, a) => (None, e, a, 1024 * 1024),
            Target::Relay => {
                let r = RelayProcess::start(&results_dir, Duration::from_secs(15)).await?;
                let (e, a) = (r.emitter_addr, r.analyzer_addr);
                relay = Some(r);
                (None, e, a, 1024 * 1024)
            }
            Target::Start(bin) => {
                let (text, _) = distributor_process::read_config(&profile.distributor_config)?;
                let pki = match &tls.dir {
                    Some(dir) => {
                        let files = distributor_process::prepare_tls_dir(dir)?;
                        let mut settings = files.client_settings();
                        settings.server_name = tls.server_name.clone();
                        let client = TlsClient::new(&settings, &TlsNames::FLAGS)
                            .map_err(|e| format!("--tls-dir {}: {e}", dir.display()))?;
                        tls.emitters = Some(client.clone());
                        tls.analyzers = Some(client);
                        Some(files)
                    }
                    None => None,
                };
                let overlay = Overlay {
                    tls: pki.as_ref(),
                    // Behind the partition link, an analyzer reaches logdist
                    // over the link, not loopback.
                    analyzers_everywhere: opts.island.is_some(),
                    emitters: profile.emitters.kind,
                    durability: opts.durability.or(profile.durability),
                    sync: opts.durability_sync,
                };
                let cfg = distributor_process::write_run_config(&text, &results_dir, overlay)?;
                let max_frame = cfg.max_frame_bytes;
                let d = DistributorProcess::start(&bin, cfg, &results_dir, Duration::from_secs(15))
                    .await?;
                let (e, a) = (d.emitter_addr, d.analyzer_addr);
                (Some(d), e, a, max_frame)
            }
        };

        let settings = profile.analyzer_list();
        let recorder = Arc::new(Recorder::new(profile.emitters.count, settings.len()));
        let run_tag = (opts.seed as u32)
            ^ (SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u32)
                .unwrap_or(0));
        let naming = EmitterNaming::new(run_tag, profile.emitters.count);
        let plan = PriorityPlan::new(&profile.emitters.priority, opts.seed);
        let ctx = AnalyzerContext {
            target: analyzer_addr,
            recorder: recorder.clone(),
            checksum: opts.checksum,
            naming: naming.clone(),
            plan: plan.clone(),
            formats: profile.emitters.formats.clone(),
            max_frame_bytes,
            hello_id_prefix: format!("lt{run_tag:08x}-a"),
            // Across a crash, as long as a restart may take, and then some.
            connect_timeout: profile.crash.as_ref().map_or(Duration::from_secs(10), |c| {
                c.ready_timeout + Duration::from_secs(10)
            }),
            tls: tls.analyzers.clone(),
            token: opts.analyzer_token.clone(),
            island: opts.island.clone(),
        };
        let analyzers: Vec<AnalyzerHandle> = settings
            .iter()
            .enumerate()
            .map(|(i, s)| analyzer::spawn(i, s.clone(), ctx.clone()))
            .collect();

        let mut harness_distributor = distributor;
        // Wait until every analyzer has connected and said hello.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if analyzers
                .iter()
                .all(|a| a.status.connected.load(Ordering::Acquire))
            {
                break;
            }
            let errors = recorder.lock().protocol_errors.clone();
            if !errors.is_empty() {
                return Err(format!(
                    "analyzers could not connect: {}",
                    errors.join("; ")
                ));
            }
            if let Some(d) = harness_distributor.as_mut()
                && let Some(status) = d.exited()
            {
                return Err(format!(
                    "logdist exited ({status}) while analyzers connected; last lines of {}:\n{}",
                    d.log_path.display(),
                    log_tail(&d.log_path, 20)
                ));
            }
            if let Some(r) = relay.as_mut()
                && let Some(status) = r.exited()
            {
                return Err(format!(
                    "the relay exited ({status}) while analyzers connected:\n{}",
                    log_tail(&r.log_path, 20)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "analyzers did not all connect to {analyzer_addr} within 15 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(profile.settle).await;

        let mut streams = Vec::with_capacity(profile.emitters.count);
        let host = emitter_addr.ip().to_string();
        for i in 0..profile.emitters.count {
            let s = logdist_net::connect(
                &host,
                emitter_addr.port(),
                tls.emitters.as_ref(),
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| format!("emitter {i} cannot connect to {emitter_addr}: {e}"))?;
            streams.push(s);
        }
        let sizes = SizeModel::new(&profile.emitters.size)?;
        let stop_emitters = CancellationToken::new();
        let epoch = Instant::now() + Duration::from_millis(50);
        recorder.set_epoch(epoch.into_std());
        let n = profile.emitters.count as u32;
        let tick = profile.emitters.tick;
        let mut emitters = Vec::new();
        let mut ack_status = Vec::new();
        let mut emitter_tasks = Vec::new();
        let mut emitter_ids = Vec::new();
        for (i, stream) in streams.into_iter().enumerate() {
            let shared = Arc::new(EmitterShared::with_rate(rate_per_emitter));
            let id = naming.id(i);
            emitter_ids.push(id.clone());
            // Spread the emitters' ticks evenly over one tick.
            let start = epoch + tick * i as u32 / n;
            let stop = stop_emitters.child_token();
            let task = match profile.emitters.kind {
                EmitterKind::Frames => {
                    let cfg = EmitterConfig {
                        index: i as u32,
                        id,
                        checksum: opts.checksum,
                        plan: plan.clone(),
                        sizes: sizes.clone(),
                        tick,
                        seed: opts.seed,
                        format: crate::syslog::format_of(&profile.emitters.formats, i),
                    };
                    tokio::spawn(emitter::run(cfg, shared.clone(), stream, start, stop))
                }
                EmitterKind::NdjsonAck => {
                    let cfg = AckEmitterConfig {
                        index: i as u32,
                        id,
                        checksum: opts.checksum,
                        plan: plan.clone(),
                        sizes: sizes.clone(),
                        tick,
                        seed: opts.seed,
                        window: profile.emitters.window,
                        target: emitter_addr,
                        tls: tls.emitters.clone(),
                        clock: epoch,
                    };
                    let status = Arc::new(AckStatus::default());
                    ack_status.push(status.clone());
                    tokio::spawn(ack_emitter::run(
                        cfg,
                        shared.clone(),
                        status,
                        recorder.clone(),
                        stream,
                        start,
                        stop,
                    ))
                }
            };
            emitter_tasks.push(task);
            emitters.push(shared);
        }
        let interrupted = CancellationToken::new();
        let on_ctrl_c = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_ctrl_c.cancel();
            }
        });
        let measured_pid = harness_distributor
            .as_ref()
            .map(|d| d.pid)
            .or(relay.as_ref().map(|r| r.pid));
        let mut sampler = Sampler::new(analyzers.len(), measured_pid);
        sampler.acked_only = profile.emitters.kind == EmitterKind::NdjsonAck;
        sampler.restart_meters();
        let run_start = sampler.counters(0);
        Ok(Harness {
            duration: opts.duration,
            results_dir,
            durability: harness_distributor
                .as_ref()
                .map(|d| d.config.durability.clone()),
            distributor: harness_distributor,
            relay,
            relay_end: None,
            logdist_bin,
            emitter_addr,
            analyzer_addr,
            recorder,
            analyzers,
            analyzer_settings: settings,
            emitters,
            ack_status,
            emitter_ids,
            emitter_tasks,
            stop_emitters,
            epoch,
            sampler,
            next_sample: epoch + Duration::from_secs(1),
            timeline: Vec::new(),
            run_start,
            run_costs: MessageCosts::default(),
            syscalls_unavailable: None,
            progress: Progress::new(opts.progress),
            aborted: None,
            naming,
            interrupted,
            interrupted_note: None,
            profile,
        })
    }

    /// False once a logdist (or relay) we started has exited (true with --target).
    pub fn distributor_alive(&mut self) -> bool {
        self.distributor
            .as_mut()
            .is_none_or(|d| d.exited().is_none())
            && self.relay.as_mut().is_none_or(|r| r.exited().is_none())
    }

    pub fn sent(&self) -> Vec<u64> {
        self.emitters.iter().map(|e| e.sent()).collect()
    }

    /// Has everything arrived that must? Every message sent (frames), or
    /// every line acked `ok` (`ndjson_ack`: the rest has no guarantee).
    pub fn all_received(&self) -> bool {
        match self.profile.emitters.kind {
            EmitterKind::Frames => self.recorder.all_received(&self.sent()),
            EmitterKind::NdjsonAck => self.recorder.all_acked_received(),
        }
    }

    /// Messages the analyzers received so far, and what the distributor and
    /// the load tester used up to now.
    pub fn counters(&mut self) -> CountersAt {
        let messages = self
            .recorder
            .lock()
            .analyzers
            .iter()
            .map(|a| a.committed)
            .sum();
        self.sampler.counters(messages)
    }

    /// Measure the CPU of this logdist from now on (a crash run restarted it).
    pub fn follow_distributor(&mut self, pid: u32) {
        self.sampler.follow_distributor(pid);
    }

    fn sample(&mut self, phase: &str) {
        let t = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_secs_f64();
        let row = self
            .sampler
            .sample(t, phase, &self.emitters, &self.recorder);
        // The closing sample covers a fraction of a second: its rates would mislead.
        if phase != "end" {
            self.progress.show(&row, self.duration);
        }
        self.timeline.push(row);
    }

    /// Wait until `deadline` or until `done` holds, sampling the timeline every
    /// second. Returns whether `done` held. Stops early (false) if the
    /// distributor dies.
    pub async fn wait_until(
        &mut self,
        deadline: Instant,
        phase: &str,
        done: impl Fn(&Harness) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.aborted.is_some() {
                return false;
            }
            // Ctrl-C ends the sending phases early; drains (and the settle
            // after the final drain) still run so the report is exact for what
            // was sent.
            if self.interrupted.is_cancelled() && !phase.ends_with("drain") && phase != "settle" {
                self.interrupted_note = Some("interrupted (Ctrl-C): stopped sending early".into());
                return false;
            }
            if let Some(d) = self.distributor.as_mut()
                && let Some(status) = d.exited()
            {
                self.aborted = Some(format!(
                    "logdist exited ({status}) during the run; last lines of {}:\n{}",
                    d.log_path.display(),
                    log_tail(&d.log_path, 20)
                ));
                return false;
            }
            if let Some(r) = self.relay.as_mut()
                && let Some(status) = r.exited()
            {
                self.aborted = Some(format!(
                    "the relay exited ({status}) during the run:\n{}",
                    log_tail(&r.log_path, 20)
                ));
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if now >= self.next_sample {
                self.sample(phase);
                while self.next_sample <= now {
                    self.next_sample += Duration::from_secs(1);
                }
            }
            let wake = deadline
                .min(self.next_sample)
                .min(now + Duration::from_millis(20));
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Stop all emitters (their sent counts are then final).
    pub async fn stop_emitters(&mut self) {
        self.stop_emitters.cancel();
        for t in self.emitter_tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// After the emitters stopped: wait for everything sent to arrive.
    pub async fn drain(&mut self, timeout: Duration) -> (bool, f64) {
        let t0 = Instant::now();
        let ok = self
            .wait_until(t0 + timeout, "drain", |h| h.all_received())
            .await;
        (ok, t0.elapsed().as_secs_f64())
    }

    /// After a successful drain: stay quiet for a while with the analyzers still
    /// reading and committing, so late redeliveries (duplicates) show up before
    /// teardown. max(1 s, 5 × the largest ack_idle), at most `SETTLE_MAX`.
    pub async fn settle(&mut self) {
        let largest_ack_idle = self
            .analyzer_settings
            .iter()
            .map(|a| a.ack_idle)
            .max()
            .unwrap_or_default();
        let quiet = (largest_ack_idle * 5)
            .max(Duration::from_secs(1))
            .min(SETTLE_MAX);
        self.wait_until(Instant::now() + quiet, "settle", |_| false)
            .await;
    }

    /// Stop analyzers (they ack what they hold) and then the distributor.
    pub async fn teardown(&mut self) -> Option<DistributorStats> {
        // A last sample so the timeline ends with the final state.
        self.sample("end");
        self.progress.finish();
        let end = self.counters();
        self.run_costs = self.run_start.costs_until(&end);
        self.syscalls_unavailable = self.sampler.syscalls_unavailable();
        self.sampler.stop_counting();
        for a in &self.analyzers {
            a.send(AnalyzerCommand::Stop);
        }
        for a in &mut self.analyzers {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut a.task).await;
        }
        if let Some(r) = self.relay.take() {
            let peak_rss_mib = r.peak_rss_mib();
            self.relay_end = Some((peak_rss_mib, r.stop().await));
        }
        let d = self.distributor.take()?;
        let peak_rss_mib = d.peak_rss().map(|b| b as f64 / (1024.0 * 1024.0));
        let pid = d.pid;
        let log = d.log_path.display().to_string();
        let config = d.config.path.display().to_string();
        let dead_letters = d.config.dead_letter_path.display().to_string();
        let stop = d.stop().await;
        Some(DistributorStats {
            pid,
            cpu_avg_pct: self.sampler.distributor_cpu_average(),
            cpu_peak_pct: self.sampler.distributor_cpu_peak,
            peak_rss_mib,
            stop,
            log,
            config,
            dead_letters,
        })
    }

    pub fn own_cpu_average(&self) -> Option<f64> {
        self.sampler.own_cpu_average()
    }
}
