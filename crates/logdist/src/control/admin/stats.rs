//! `GET /api/v1/stats`: the seed's statistics (same keys) plus logdist's own
//! totals, per-analyzer and per-priority-class numbers. All counters are
//! cumulative since start; docs/operations.md maps the seed's keys to them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{AppState, timestamp, uptime};
use crate::control::observed::DurabilityView;
use crate::delivery::directory::{Health, percent};
use crate::stats::CLASSES;

#[derive(Serialize)]
struct StatsResponse {
    /// Messages accepted from every input (each TCP message is its own packet).
    total_packets_received: u64,
    total_messages_routed: u64,
    active_analyzers: usize,
    /// The fullest queue level of any analyzer, % of `queue_capacity`.
    packet_channel_util_percent: f64,
    /// Unacknowledged messages, % of the connected analyzers' windows.
    result_channel_util_percent: f64,
    /// The holding queue, % of `delivery.hold_capacity`.
    retry_channel_util_percent: f64,
    uptime: String,
    timestamp: String,
    analyzers: BTreeMap<String, AnalyzerStats>,
    totals: Totals,
    priorities: BTreeMap<&'static str, ClassStats>,
    durability: DurabilityView,
}

#[derive(Serialize)]
struct AnalyzerStats {
    name: String,
    is_healthy: bool,
    health: Health,
    manual_override: bool,
    weight: f64,
    /// Messages it acknowledged.
    processed_count: u64,
    /// Messages its ended connections (failed or closed) handed back for another attempt.
    error_count: u64,
    routed: u64,
    diverted_in: u64,
    connection_failures: u64,
    queue_depth: u64,
    queue_util_percent: f64,
    in_flight: u64,
}

#[derive(Serialize)]
struct Totals {
    accepted: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    routed: u64,
    held: u64,
    diverted: u64,
    /// Disk mode: accepted into the spool's backlog for want of room in memory.
    backlogged: u64,
    delivered: u64,
    rerouted: u64,
    dead_lettered: u64,
    dead_letter_failures: u64,
    /// Every refused connection, on every listener.
    connections_refused: u64,
    /// Refused connections by listener, then reason (zeros included).
    connections_refused_by: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    bad_length_closes: u64,
    /// Emitter connections closed for making no progress, by reason (zeros included).
    emitter_closes: BTreeMap<&'static str, u64>,
    health_changes: u64,
    queued: u64,
    in_flight: u64,
    holding: usize,
    /// The memory budget (`limits.max_buffered_bytes`): bytes charged now.
    buffered_bytes: usize,
    buffered_bytes_limit: usize,
    /// Times ingest waited for budget before reading on.
    reads_waited_for_budget: u64,
    /// Times one charge was let past the limit (see docs/operations.md).
    buffered_bytes_overdrafts: u64,
}

#[derive(Serialize)]
struct ClassStats {
    accepted: u64,
    delivered: u64,
    queued: u64,
}

pub(super) async fn stats(State(admin): AppState) -> Json<impl Serialize> {
    let observed = &admin.observed;
    let s = observed.stats.snapshot();
    let analyzers = observed.directory.snapshot();
    let connected = analyzers.iter().filter(|a| a.connected).count();
    let in_flight: u64 = analyzers.iter().map(|a| a.in_flight).sum();
    let (holding, hold_capacity) = observed
        .router
        .holding()
        .map_or((0, 0), |h| (h.len(), h.capacity()));
    let fullest = analyzers
        .iter()
        .map(|a| a.queue_util_percent)
        .fold(0.0, f64::max);
    let priorities = CLASSES
        .iter()
        .enumerate()
        .map(|(class, name)| {
            let stats = ClassStats {
                accepted: s.accepted_by_class[class],
                delivered: s.delivered_by_class[class],
                queued: analyzers.iter().map(|a| a.queued_by_class[class]).sum(),
            };
            (*name, stats)
        })
        .collect();
    let totals = Totals {
        accepted: s.accepted,
        rejected: s.rejected_total(),
        rejected_by_reason: s.rejected.iter().copied().collect(),
        routed: s.routed,
        held: s.held,
        diverted: s.diverted,
        backlogged: s.backlogged,
        delivered: s.delivered,
        rerouted: s.redelivered,
        dead_lettered: s.dead_lettered,
        dead_letter_failures: s.dead_letter_failures,
        connections_refused: s.connections_refused,
        connections_refused_by: s.refused.iter().fold(BTreeMap::new(), |mut by, (l, r, n)| {
            by.entry(l.as_str())
                .or_insert_with(BTreeMap::new)
                .insert(r.as_str(), *n);
            by
        }),
        bad_length_closes: s.bad_length_closes,
        emitter_closes: s.emitter_closes.iter().copied().collect(),
        health_changes: s.health_changes,
        queued: analyzers.iter().map(|a| a.queue_depth).sum(),
        in_flight,
        holding,
        buffered_bytes: observed.budget.used(),
        buffered_bytes_limit: observed.budget.limit(),
        reads_waited_for_budget: observed.budget.waits(),
        buffered_bytes_overdrafts: observed.budget.overdrafts(),
    };
    let body = StatsResponse {
        total_packets_received: s.accepted,
        total_messages_routed: s.routed,
        active_analyzers: analyzers
            .iter()
            .filter(|a| a.health == Health::Healthy)
            .count(),
        packet_channel_util_percent: fullest,
        result_channel_util_percent: percent(in_flight as usize, connected * admin.window),
        retry_channel_util_percent: percent(holding, hold_capacity),
        uptime: uptime(observed.started.elapsed(), true),
        timestamp: timestamp(),
        analyzers: analyzers
            .into_iter()
            .map(|a| {
                let stats = AnalyzerStats {
                    name: a.id.to_string(),
                    is_healthy: a.health == Health::Healthy,
                    health: a.health,
                    manual_override: a.manual_override,
                    weight: a.weight,
                    processed_count: a.delivered,
                    error_count: a.handed_back,
                    routed: a.routed,
                    diverted_in: a.diverted_in,
                    connection_failures: a.failures,
                    queue_depth: a.queue_depth,
                    queue_util_percent: a.queue_util_percent,
                    in_flight: a.in_flight,
                };
                (a.id.to_string(), stats)
            })
            .collect(),
        totals,
        priorities,
        durability: observed.durability(),
    };
    Json(body)
}
