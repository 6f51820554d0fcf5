//! A simulated emitter: one TCP connection that sends binary frames at a steady
//! rate, open loop. Every tick it works out how many messages are due since the
//! start (rate × time), builds them all and writes them in one go; if the
//! distributor is slow the count of due messages grows, so a slow distributor
//! can never quietly lower the offered load. How far behind schedule the
//! emitter got (its lag) is measured and reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::payload::{ChecksumKind, PayloadWriter, unix_nanos_now};
use crate::priority::PriorityPlan;
use crate::profile::SizeSettings;
use crate::syslog::{self, EmitterFormat};

/// Counters the emitter publishes while it runs.
#[derive(Debug, Default)]
pub struct EmitterShared {
    /// Messages completely written to the socket (counters 0..sent).
    pub sent: AtomicU64,
    /// Target rate in milli-messages per second (changed by the ramp).
    pub rate_milli: AtomicU64,
    /// How far behind schedule the emitter is now, and at worst, in µs.
    pub lag_us: AtomicU64,
    pub max_lag_us: AtomicU64,
    /// Time spent waiting for socket writes (distributor backpressure), in µs.
    pub write_wait_us: AtomicU64,
    pub error: Mutex<Option<String>>,
}

impl EmitterShared {
    pub fn with_rate(rate: f64) -> Self {
        let s = EmitterShared::default();
        s.set_rate(rate);
        s
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
}

/// Message sizes: log-normal around the mean, clamped.
#[derive(Clone, Debug)]
pub struct SizeModel {
    dist: Option<LogNormal<f64>>,
    settings: SizeSettings,
}

impl SizeModel {
    pub fn new(settings: &SizeSettings) -> Result<Self, String> {
        let dist = if settings.cv > 0.0 {
            Some(
                LogNormal::from_mean_cv(settings.mean, settings.cv)
                    .map_err(|e| format!("emitters.size: {e}"))?,
            )
        } else {
            None
        };
        Ok(SizeModel {
            dist,
            settings: settings.clone(),
        })
    }

    pub fn sample(&self, rng: &mut SmallRng) -> usize {
        let v = match &self.dist {
            Some(d) => d.sample(rng),
            None => self.settings.mean,
        };
        (v.round() as usize).clamp(self.settings.min, self.settings.max)
    }

    /// `SIZE_POOL` sizes drawn once, which an emitter then takes in turn:
    /// drawing a log-normal number costs more than the rest of a frame.
    pub fn pool(&self, rng: &mut SmallRng) -> Vec<usize> {
        (0..SIZE_POOL).map(|_| self.sample(rng)).collect()
    }
}

/// How many sizes an emitter draws up front ([`SizeModel::pool`]): enough
/// that the distribution is the model's.
const SIZE_POOL: usize = 4096;

pub struct EmitterConfig {
    pub index: u32,
    pub id: String,
    pub checksum: ChecksumKind,
    pub plan: PriorityPlan,
    pub sizes: SizeModel,
    pub tick: Duration,
    pub seed: u64,
    /// Binary frames or syslog ([`crate::syslog`]).
    pub format: EmitterFormat,
}

/// How long, at the end, the emitter waits for what TLS still holds to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Send until `stop`, on `stream` (plain TCP or TLS: `logdist_net::ClientStream`).
/// `start` is when this emitter's schedule begins.
pub async fn run<S: AsyncWrite + Unpin>(
    cfg: EmitterConfig,
    shared: Arc<EmitterShared>,
    mut stream: S,
    start: Instant,
    stop: CancellationToken,
) {
    let writer = PayloadWriter::new(&cfg.id, cfg.checksum);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (u64::from(cfg.index) << 32));
    let sizes = cfg.sizes.pool(&mut rng);
    let mut ticker = tokio::time::interval_at(start, cfg.tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut scratch = Vec::with_capacity(cfg.sizes.settings.max + 128);
    let mut syslog_scratch = Vec::with_capacity(cfg.sizes.settings.max + 128);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut frame_ends: Vec<usize> = Vec::new();
    let mut counter: u64 = 0;
    // Messages due since the start, as a real number (the rate may change).
    let mut due: f64 = 0.0;
    let mut last = start;

    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let rate = shared.rate();
        due += rate * now.saturating_duration_since(last).as_secs_f64();
        last = now;
        let due_count = due as u64;
        // At most a quarter second of traffic per write, so one write stays bounded.
        let batch = due_count
            .saturating_sub(counter)
            .min(((rate * 0.25) as u64).max(64));
        if batch > 0 {
            buf.clear();
            frame_ends.clear();
            let stamp = writer.stamp(unix_nanos_now());
            for c in counter..counter + batch {
                let size = sizes[(c % sizes.len() as u64) as usize];
                let priority = cfg.plan.priority_for(cfg.index, c);
                if cfg.format == EmitterFormat::Frame {
                    // Straight into the batch: one copy of each payload.
                    let start = buf.len();
                    buf.put_u32(0);
                    buf.put_u8(priority);
                    writer.append(&stamp, c, size, &mut buf);
                    let length = (buf.len() - start) as u32;
                    buf[start..start + 4].copy_from_slice(&length.to_be_bytes());
                } else {
                    scratch.clear();
                    writer.append(&stamp, c, size, &mut scratch);
                    syslog::encode(
                        cfg.format,
                        priority,
                        &scratch,
                        &mut syslog_scratch,
                        &mut buf,
                    );
                }
                frame_ends.push(buf.len());
            }
            let t0 = Instant::now();
            let (written, result) = write_or_stop(&mut stream, &buf, &stop).await;
            shared
                .write_wait_us
                .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            // Only whole frames count as sent.
            let complete = frame_ends.partition_point(|&end| end <= written) as u64;
            counter += complete;
            shared.sent.store(counter, Ordering::Release);
            match result {
                WriteOutcome::Done => {}
                WriteOutcome::Stopped => break,
                WriteOutcome::Failed(e) => {
                    *shared.error.lock() = Some(format!("emitter {}: write failed: {e}", cfg.id));
                    return;
                }
            }
        }
        // Lag: messages due by now that are not sent yet, in time.
        if rate > 0.0 {
            let now_due = due + rate * Instant::now().saturating_duration_since(last).as_secs_f64();
            let behind = (now_due - counter as f64).max(0.0);
            let lag_us = (behind / rate * 1e6) as u64;
            shared.lag_us.store(lag_us, Ordering::Relaxed);
            shared.max_lag_us.fetch_max(lag_us, Ordering::Relaxed);
        } else {
            // Paused (ramp between steps): the schedule restarts from here.
            due = counter as f64;
            shared.lag_us.store(0, Ordering::Relaxed);
        }
    }
    // Shutting down sends what TLS still holds (written frames count as sent).
    match tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await {
        Ok(_) => {}
        Err(_) => {
            *shared.error.lock() = Some(format!(
                "emitter {}: what it wrote last was not sent within {CLOSE_TIMEOUT:?} of the end",
                cfg.id
            ));
        }
    }
}

enum WriteOutcome {
    Done,
    Stopped,
    Failed(std::io::Error),
}

/// Write all of `data` unless `stop` comes first, then flush (TLS may hold
/// records back; plain TCP has nothing to flush); returns how much was
/// written.
async fn write_or_stop<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    stop: &CancellationToken,
) -> (usize, WriteOutcome) {
    let mut pos = 0;
    while pos < data.len() {
        tokio::select! {
            biased;
            r = stream.write(&data[pos..]) => match r {
                Ok(0) => return (pos, WriteOutcome::Failed(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => pos += n,
                Err(e) => return (pos, WriteOutcome::Failed(e)),
            },
            _ = stop.cancelled() => return (pos, WriteOutcome::Stopped),
        }
    }
    tokio::select! {
        biased;
        r = stream.flush() => match r {
            Ok(()) => (pos, WriteOutcome::Done),
            Err(e) => (pos, WriteOutcome::Failed(e)),
        },
        _ = stop.cancelled() => (pos, WriteOutcome::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PriorityMode, PrioritySettings};
    use futures_util::StreamExt;

    /// An emitter over TLS (test certificates, client certificate required)
    /// through a terminator to a plain frame reader: every frame it counts as
    /// sent arrives, whole and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_over_tls_and_everything_counted_arrives() {
        use logdist_net::test_pki::{TestPki, TlsTerminator};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut frames =
                tokio_util::codec::FramedRead::new(conn, logdist_wire::FrameDecoder::new(1 << 20));
            let mut payloads = Vec::new();
            while let Some(frame) = frames.next().await {
                payloads.push(frame.unwrap().payload());
            }
            payloads
        });
        let pki = TestPki::generate(&[]);
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write_to(dir.path()).unwrap();
        let terminator = TlsTerminator::start(pki.server_config(true), plain)
            .await
            .unwrap();
        let client =
            logdist_net::TlsClient::new(&files.client_settings(), &logdist_net::TlsNames::FLAGS)
                .unwrap();
        let stream = logdist_net::connect(
            "127.0.0.1",
            terminator.addr.port(),
            Some(&client),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(stream.is_tls());

        let cfg = EmitterConfig {
            index: 0,
            id: "e0".into(),
            checksum: ChecksumKind::Fnv,
            plan: PriorityPlan::new(
                &PrioritySettings {
                    mode: PriorityMode::Cyclic,
                    levels: vec![0, 3, 7],
                    weights: vec![],
                },
                1,
            ),
            sizes: SizeModel::new(&SizeSettings::default()).unwrap(),
            tick: Duration::from_millis(5),
            seed: 1,
            format: EmitterFormat::Frame,
        };
        let shared = Arc::new(EmitterShared::with_rate(20_000.0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg,
            shared.clone(),
            stream,
            Instant::now(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(shared.error.lock().is_none(), "{:?}", shared.error.lock());
        let sent = shared.sent();
        assert!(sent > 1000, "sent only {sent}");
        let payloads = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            payloads.len() as u64,
            sent,
            "every frame counted as sent arrived"
        );
        for (counter, payload) in payloads.iter().enumerate() {
            match crate::payload::verify(payload, ChecksumKind::Fnv) {
                Ok(v) => assert_eq!(v.counter, counter as u64),
                Err(_) => panic!("frame {counter} does not verify"),
            }
        }
        assert_eq!(terminator.accepted(), 1);
    }

    #[test]
    fn sizes_are_log_normal_around_the_mean() {
        let m = SizeModel::new(&SizeSettings {
            mean: 512.0,
            cv: 0.3,
            min: 64,
            max: 4096,
        })
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let samples: Vec<usize> = (0..20_000).map(|_| m.sample(&mut rng)).collect();
        let mean = samples.iter().sum::<usize>() as f64 / samples.len() as f64;
        assert!((mean - 512.0).abs() < 10.0, "mean {mean}");
        assert!(samples.iter().all(|&s| (64..=4096).contains(&s)));
        let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100);
    }
}
