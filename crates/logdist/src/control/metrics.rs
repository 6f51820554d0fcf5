//! `GET /metrics`: Prometheus (OpenMetrics) text, rendered at scrape time.
//!
//! Nothing here is updated on the data path: every value is read, when
//! Prometheus asks, from the counters the distributor keeps anyway ([`Stats`],
//! the analyzer [`Directory`](crate::delivery::directory::Directory), the
//! holding queue). A [`Collector`] on a per-server [`Registry`] does the
//! reading, so several servers in one process (tests) never share a metric.
//! docs/operations.md lists every metric.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::observed::Observed;
use crate::delivery::directory::{AnalyzerRecord, Health};
use crate::refusal::{Listener, RefusalReason};
use crate::stats::{CLASSES, LATENCY_BOUNDS, Latency, Stats};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose only collector reads `observed` at each scrape.
pub fn registry(observed: Observed) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(observed)));
    registry
}

/// Encodes every metric of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

struct Scrape(Observed);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family: its descriptor, then one sample per label set.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> std::fmt::Result {
    let mut descriptor = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(descriptor.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    single(encoder, name, help, ConstCounter::new(value))
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    single(encoder, name, help, ConstGauge::new(value))
}

/// One counter sample per analyzer.
fn per_analyzer(
    encoder: &mut DescriptorEncoder,
    analyzers: &[AnalyzerRecord],
    name: &str,
    help: &str,
    value: impl Fn(&AnalyzerRecord) -> u64,
) -> std::fmt::Result {
    let samples = analyzers
        .iter()
        .map(|a| (vec![("analyzer", &*a.id)], ConstCounter::new(value(a))));
    family(encoder, name, help, MetricType::Counter, samples)
}

/// One gauge sample per analyzer.
fn per_analyzer_gauge(
    encoder: &mut DescriptorEncoder,
    analyzers: &[AnalyzerRecord],
    name: &str,
    help: &str,
    value: impl Fn(&AnalyzerRecord) -> f64,
) -> std::fmt::Result {
    let samples = analyzers
        .iter()
        .map(|a| (vec![("analyzer", &*a.id)], ConstGauge::new(value(a))));
    family(encoder, name, help, MetricType::Gauge, samples)
}

/// A histogram read from [`Latency`] counters (the encoder makes the buckets cumulative).
struct LatencyHistogram<'a>(&'a Latency);

impl std::fmt::Debug for LatencyHistogram<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyHistogram")
    }
}

impl EncodeMetric for LatencyHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&self.0.buckets)
            .map(|(&bound, n)| (bound, n.get()))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.get() as f64 / 1e9;
        encoder.encode_histogram::<Labels>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let observed = &self.0;
        let stats: &Stats = &observed.stats;
        let s = stats.snapshot();
        let analyzers = observed.directory.snapshot();
        let e = &mut encoder;

        let by_class = |values: [u64; CLASSES.len()]| {
            CLASSES
                .iter()
                .zip(values)
                .map(|(class, n)| (vec![("class", *class)], ConstCounter::new(n)))
                .collect::<Vec<_>>()
        };
        family(
            e,
            "logdist_messages_accepted",
            "Messages accepted from emitters (TCP and HTTP), by priority class.",
            MetricType::Counter,
            by_class(s.accepted_by_class),
        )?;
        family(
            e,
            "logdist_messages_rejected",
            "Messages refused at ingest, by reason.",
            MetricType::Counter,
            s.rejected
                .iter()
                .map(|(reason, n)| (vec![("reason", *reason)], ConstCounter::new(*n))),
        )?;
        counter(
            e,
            "logdist_messages_routed",
            "Messages put into an analyzer queue (first attempts and reroutes).",
            s.routed,
        )?;
        counter(
            e,
            "logdist_messages_diverted",
            "Routed messages that went to another analyzer because the picked one was full.",
            s.diverted,
        )?;
        counter(
            e,
            "logdist_messages_held",
            "Messages parked in the holding queue because no analyzer could take any.",
            s.held,
        )?;
        family(
            e,
            "logdist_messages_delivered",
            "Messages acknowledged by an analyzer (written, for analyzers without acks), by priority class.",
            MetricType::Counter,
            by_class(s.delivered_by_class),
        )?;
        counter(
            e,
            "logdist_messages_rerouted",
            "Messages handed back by a failed or removed analyzer connection for another attempt.",
            s.redelivered,
        )?;
        counter(
            e,
            "logdist_messages_dead_lettered",
            "Messages written to the dead-letter file.",
            s.dead_lettered,
        )?;
        counter(
            e,
            "logdist_dead_letter_write_failures",
            "Messages that could not be written to the dead-letter file (lost, and logged).",
            s.dead_letter_failures,
        )?;
        counter(
            e,
            "logdist_emitter_connections_refused",
            "Emitter connections closed at once because limits.max_connections were open.",
            s.refused(Listener::Emitter, RefusalReason::MaxConnections),
        )?;
        family(
            e,
            "logdist_connections_refused",
            "Connections refused, by listener (emitter, analyzer, admin) and reason.",
            MetricType::Counter,
            s.refused.iter().map(|(listener, reason, n)| {
                (
                    vec![("listener", listener.as_str()), ("reason", reason.as_str())],
                    ConstCounter::new(*n),
                )
            }),
        )?;
        counter(
            e,
            "logdist_emitter_connections_bad_length",
            "Emitter connections closed because a binary frame length could not be valid.",
            s.bad_length_closes,
        )?;
        family(
            e,
            "logdist_emitter_closes",
            "Emitter connections closed for making no progress, by reason (idle_timeout, frame_timeout).",
            MetricType::Counter,
            s.emitter_closes
                .iter()
                .map(|(reason, n)| (vec![("reason", *reason)], ConstCounter::new(*n))),
        )?;
        counter(
            e,
            "logdist_analyzer_health_changes",
            "Analyzer health transitions.",
            s.health_changes,
        )?;
        family(
            e,
            "logdist_delivery_latency_seconds",
            "Time from a message's arrival at the distributor to its acknowledgement, by priority class.",
            MetricType::Histogram,
            CLASSES
                .iter()
                .zip(&stats.delivered_by_class)
                .map(|(class, latency)| (vec![("class", *class)], LatencyHistogram(latency))),
        )?;

        per_analyzer(
            e,
            &analyzers,
            "logdist_analyzer_routed",
            "Messages put into this analyzer's queues.",
            |a| a.routed,
        )?;
        per_analyzer(
            e,
            &analyzers,
            "logdist_analyzer_diverted_in",
            "Messages this analyzer got because the analyzer picked for them was full.",
            |a| a.diverted_in,
        )?;
        per_analyzer(
            e,
            &analyzers,
            "logdist_analyzer_delivered",
            "Messages this analyzer acknowledged.",
            |a| a.delivered,
        )?;
        per_analyzer(
            e,
            &analyzers,
            "logdist_analyzer_handed_back",
            "Messages this analyzer's ended connections handed back for rerouting.",
            |a| a.handed_back,
        )?;
        per_analyzer(
            e,
            &analyzers,
            "logdist_analyzer_failures",
            "Connections to this analyzer that ended in a failure.",
            |a| a.failures,
        )?;
        per_analyzer_gauge(
            e,
            &analyzers,
            "logdist_analyzer_weight",
            "The analyzer's weight (its remembered one while manually overridden).",
            |a| a.weight,
        )?;
        per_analyzer_gauge(
            e,
            &analyzers,
            "logdist_analyzer_up",
            "1 while the analyzer is healthy (gets its share), else 0.",
            |a| f64::from(u8::from(a.health == Health::Healthy)),
        )?;
        per_analyzer_gauge(
            e,
            &analyzers,
            "logdist_analyzer_manual_override",
            "1 while an operator has taken the analyzer out of routing.",
            |a| f64::from(u8::from(a.manual_override)),
        )?;
        per_analyzer_gauge(
            e,
            &analyzers,
            "logdist_in_flight",
            "Messages written to the analyzer and not acknowledged yet.",
            |a| a.in_flight as f64,
        )?;
        let mut depths = Vec::new();
        for a in &analyzers {
            for (class, depth) in CLASSES.iter().zip(a.queued_by_class) {
                depths.push((
                    vec![("analyzer", &*a.id), ("class", *class)],
                    ConstGauge::new(depth as f64),
                ));
            }
        }
        family(
            e,
            "logdist_queue_depth",
            "Messages queued for the analyzer, by priority class.",
            MetricType::Gauge,
            depths,
        )?;
        let states = [
            ("healthy", Health::Healthy),
            ("unhealthy", Health::Unhealthy),
            ("draining", Health::Draining),
        ];
        family(
            e,
            "logdist_analyzers",
            "Known analyzers, by health.",
            MetricType::Gauge,
            states.iter().map(|(name, health)| {
                let n = analyzers.iter().filter(|a| a.health == *health).count();
                (vec![("health", *name)], ConstGauge::new(n as f64))
            }),
        )?;
        let holding = observed.router.holding().map_or(0, |h| h.len());
        gauge(
            e,
            "logdist_holding_depth",
            "Messages in the holding queue.",
            holding as f64,
        )?;
        let budget = &observed.budget;
        gauge(
            e,
            "logdist_buffered_bytes",
            "Bytes of emitters' data held (read buffers, inflated gzip, queued, held and in-flight messages by the blocks they pin).",
            budget.used() as f64,
        )?;
        gauge(
            e,
            "logdist_buffered_bytes_limit",
            "limits.max_buffered_bytes: reading from emitters waits while buffered bytes would exceed it.",
            budget.limit() as f64,
        )?;
        counter(
            e,
            "logdist_reads_waited_for_budget",
            "Times ingest waited for memory budget before reading on (a read, a gzip inflation, an HTTP request).",
            budget.waits(),
        )?;
        counter(
            e,
            "logdist_buffered_bytes_overdrafts",
            "Times one charge was let past limits.max_buffered_bytes because nothing else would free budget.",
            budget.overdrafts(),
        )?;
        let durability = observed.durability();
        let disk = durability.mode == crate::config::DurabilityMode::Disk;
        gauge(
            e,
            "logdist_durability_disk",
            "1 when durability.mode is \"disk\" (accepted messages are in the spool before they are acknowledged), 0 in memory mode.",
            f64::from(u8::from(disk)),
        )?;
        gauge(
            e,
            "logdist_spool_bytes",
            "Bytes of spool files on disk.",
            durability.spool_bytes as f64,
        )?;
        gauge(
            e,
            "logdist_spool_segments",
            "Spool segment files on disk.",
            durability.spool_segments as f64,
        )?;
        gauge(
            e,
            "logdist_spool_messages",
            "Messages in the spool not yet delivered or dead-lettered.",
            durability.spool_messages as f64,
        )?;
        gauge(
            e,
            "logdist_spool_backlog",
            "Messages on disk only, waiting for room in the analyzers' queues.",
            durability.backlog as f64,
        )?;
        gauge(
            e,
            "logdist_spool_oldest_unacked_seconds",
            "Age of the oldest spool segment holding an unfinished message.",
            durability.oldest_unacked_seconds,
        )?;
        counter(
            e,
            "logdist_spool_syncs",
            "Spool syncs (fdatasync): rate() gives fsyncs per second.",
            durability.syncs,
        )?;
        counter(
            e,
            "logdist_spool_written_bytes",
            "Bytes written to the spool.",
            durability.written_bytes,
        )?;
        counter(
            e,
            "logdist_spool_recovered",
            "Messages found in the spool at start and delivered again (at least once: some may have been delivered before the crash).",
            durability.recovered,
        )?;
        counter(
            e,
            "logdist_spool_torn_tails",
            "Spool files whose end was cut at start (a crash in the middle of a write).",
            durability.torn_tails,
        )?;
        counter(
            e,
            "logdist_spool_write_errors",
            "Spool writes or syncs that failed and were retried.",
            durability.write_errors,
        )?;
        counter(
            e,
            "logdist_spool_read_errors",
            "Backlog messages that could not be read back from the spool (left there for the next start).",
            durability.read_errors,
        )?;
        gauge(
            e,
            "logdist_uptime_seconds",
            "Seconds since the distributor started.",
            observed.started.elapsed().as_secs_f64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let stats = Stats::default();
        let mut tally = crate::stats::DeliveryTally::default();
        tally.record(0, std::time::Duration::from_micros(50));
        tally.record(0, std::time::Duration::from_millis(2));
        tally.flush(&stats);
        let mut registry = Registry::default();
        struct One(Stats);
        impl std::fmt::Debug for One {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("One")
            }
        }
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
                single(
                    &mut encoder,
                    "lat",
                    "h",
                    LatencyHistogram(&self.0.delivered_by_class[0]),
                )
            }
        }
        registry.register_collector(Box::new(One(stats)));
        let text = render(&registry);
        assert!(text.contains("lat_bucket{le=\"0.0001\"} 1"), "{text}");
        assert!(text.contains("lat_bucket{le=\"0.0025\"} 2"), "{text}");
        assert!(text.contains("lat_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("\nlat_count 2\n"), "{text}");
    }
}
