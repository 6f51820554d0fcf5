//! Accounting for emitters that get a reply per message (`ndjson_ack`): which
//! lines logdist answered `ok`, and, against what the analyzers committed (the
//! [`Ledger`]), whether every one of them arrived.
//!
//! logdist promises at least once for what it acked `ok`, and nothing for a
//! line whose reply never came (the connection, or logdist, died first). So
//! per emitter:
//! - `lost`: acked `ok`, never received. The one figure that fails the run.
//! - `duplicates`: receptions beyond the first (a restart redelivers what no
//!   analyzer had acknowledged yet); `checks.allow_duplicates` decides.
//! - `unacked_received`: received although no `ok` came back for it (logdist
//!   took the line, and its reply went down with the connection). Allowed.

use std::collections::BTreeMap;

use crate::ledger::Ledger;

/// How many lost counters the account names.
const FIRST_LOST: usize = 10;

#[derive(Debug, Default)]
struct EmitterAcks {
    /// Bit `c % 64` of word `c / 64`: line `c` was answered `ok`.
    acked: Vec<u64>,
    acked_count: u64,
    rejected: u64,
    /// Live loss estimate: counters below `scanned_upto` were checked once...
    scanned_upto: u64,
    /// ...and these of them were acked but not received at the last check.
    overdue: Vec<u64>,
}

fn is_set(words: &[u64], counter: u64) -> bool {
    words
        .get((counter / 64) as usize)
        .is_some_and(|w| w & (1 << (counter % 64)) != 0)
}

/// Which lines of every `ndjson_ack` emitter were acked `ok` or rejected.
#[derive(Debug)]
pub struct AckLedger {
    emitters: Vec<EmitterAcks>,
    /// Error replies by `reason` (our lines are valid: each one is a failure).
    pub rejection_reasons: BTreeMap<String, u64>,
}

/// One emitter's reconciliation at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AckAccount {
    /// Lines handed to a connection (counters 0..written).
    pub written: u64,
    pub acked_ok: u64,
    /// Lines answered with an error reply.
    pub rejected: u64,
    /// Lines whose connection ended before their reply came.
    pub unanswered: u64,
    /// Distinct lines some analyzer committed.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unacked_received: u64,
    /// The first few lost counters, for the report.
    pub first_lost: Vec<u64>,
}

impl AckLedger {
    pub fn new(emitters: usize) -> Self {
        AckLedger {
            emitters: (0..emitters).map(|_| EmitterAcks::default()).collect(),
            rejection_reasons: BTreeMap::new(),
        }
    }

    /// Line `counter` of `emitter` was answered `ok`.
    pub fn record_ok(&mut self, emitter: usize, counter: u64) {
        let Some(e) = self.emitters.get_mut(emitter) else {
            return;
        };
        let word = (counter / 64) as usize;
        if word >= e.acked.len() {
            let new_len = (word + 1).max(e.acked.len() * 2).max(1024);
            e.acked.resize(new_len, 0);
        }
        let bit = 1u64 << (counter % 64);
        if e.acked[word] & bit == 0 {
            e.acked[word] |= bit;
            e.acked_count += 1;
        }
    }

    /// A line of `emitter` was answered with an error reply.
    pub fn record_rejected(&mut self, emitter: usize, reason: &str) {
        if let Some(e) = self.emitters.get_mut(emitter) {
            e.rejected += 1;
        }
        *self
            .rejection_reasons
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Has every line acked `ok` so far been received?
    pub fn all_received(&self, received: &Ledger) -> bool {
        self.emitters.iter().enumerate().all(|(i, e)| {
            let seen = received.received_words(i);
            e.acked
                .iter()
                .enumerate()
                .all(|(w, &a)| a & !seen.get(w).copied().unwrap_or(0) == 0)
        })
    }

    /// Lines written before the cut-off (`sent_before[i]` of emitter i) that
    /// were acked `ok` and have not arrived yet: the live "lost so far"
    /// estimate. Each counter is scanned once (a line not acked by then is
    /// not watched), then only the missing ones are rechecked.
    pub fn overdue(&mut self, received: &Ledger, sent_before: &[u64]) -> u64 {
        let mut total = 0;
        for (i, (e, &upto)) in self.emitters.iter_mut().zip(sent_before).enumerate() {
            let seen = received.received_words(i);
            e.overdue.retain(|&c| !is_set(seen, c));
            for c in e.scanned_upto..upto {
                if is_set(&e.acked, c) && !is_set(seen, c) {
                    e.overdue.push(c);
                }
            }
            e.scanned_upto = e.scanned_upto.max(upto);
            total += e.overdue.len() as u64;
        }
        total
    }

    /// The reconciliation of `emitter`, which wrote lines 0..`written`.
    pub fn account(&self, emitter: usize, written: u64, received: &Ledger) -> AckAccount {
        let e = &self.emitters[emitter];
        let seen = received.received_words(emitter);
        let mut account = AckAccount {
            written,
            acked_ok: e.acked_count,
            rejected: e.rejected,
            unanswered: written.saturating_sub(e.acked_count + e.rejected),
            duplicates: received.account(emitter, written).duplicated,
            ..AckAccount::default()
        };
        for w in 0..written.div_ceil(64) as usize {
            let base = w as u64 * 64;
            // Only counters below `written`: anything above is not ours to count.
            let mask = if written - base >= 64 {
                u64::MAX
            } else {
                (1u64 << (written - base)) - 1
            };
            let a = e.acked.get(w).copied().unwrap_or(0) & mask;
            let r = seen.get(w).copied().unwrap_or(0) & mask;
            account.received += u64::from(r.count_ones());
            account.unacked_received += u64::from((r & !a).count_ones());
            let mut missing = a & !r;
            account.lost += u64::from(missing.count_ones());
            while missing != 0 && account.first_lost.len() < FIRST_LOST {
                account
                    .first_lost
                    .push(base + u64::from(missing.trailing_zeros()));
                missing &= missing - 1;
            }
        }
        account
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emitter 0 wrote 200 lines: 0..150 acked ok, 150..190 without a reply,
    /// 190..200 rejected. Analyzers received 0..150 except 7, 64 and 149
    /// (lost), 150..160 (unacked but taken), and 3 and 100 twice.
    #[test]
    fn lost_duplicates_and_unacked_received_are_counted_right() {
        let mut acks = AckLedger::new(2);
        let mut received = Ledger::new(2);
        for c in 0..150 {
            acks.record_ok(0, c);
        }
        // A second ok for the same line (cannot happen on the wire) counts once.
        acks.record_ok(0, 5);
        for _ in 190..200 {
            acks.record_rejected(0, "invalid_json");
        }
        for c in (0..160).filter(|c| ![7, 64, 149].contains(c)) {
            received.record(0, c);
        }
        received.record(0, 3);
        received.record(0, 100);
        // Emitter 1: everything acked arrived.
        for c in 0..70 {
            acks.record_ok(1, c);
            received.record(1, c);
        }

        let a = acks.account(0, 200, &received);
        assert_eq!(
            a,
            AckAccount {
                written: 200,
                acked_ok: 150,
                rejected: 10,
                unanswered: 40,
                received: 157,
                lost: 3,
                duplicates: 2,
                unacked_received: 10,
                first_lost: vec![7, 64, 149],
            }
        );
        let b = acks.account(1, 70, &received);
        assert_eq!(
            (b.acked_ok, b.received, b.lost, b.duplicates),
            (70, 70, 0, 0)
        );
        assert_eq!(acks.rejection_reasons["invalid_json"], 10);

        assert!(!acks.all_received(&received));
        for c in [7, 64, 149] {
            received.record(0, c);
        }
        assert!(acks.all_received(&received));
        assert_eq!(acks.account(0, 200, &received).lost, 0);
    }

    /// Received counters at or above `written` are not counted as received
    /// here (the ledger reports them as unexpected).
    #[test]
    fn counters_beyond_written_are_not_ours() {
        let mut acks = AckLedger::new(1);
        let mut received = Ledger::new(1);
        for c in 0..64 {
            acks.record_ok(0, c);
            received.record(0, c);
        }
        received.record(0, 64);
        received.record(0, 500);
        let a = acks.account(0, 64, &received);
        assert_eq!((a.received, a.lost, a.unacked_received), (64, 0, 0));
        let a = acks.account(0, 65, &received);
        assert_eq!((a.received, a.unacked_received, a.unanswered), (65, 1, 1));
    }

    #[test]
    fn overdue_watches_only_acked_lines() {
        let mut acks = AckLedger::new(1);
        let mut received = Ledger::new(1);
        for c in [0, 1, 2, 4] {
            acks.record_ok(0, c);
        }
        received.record(0, 0);
        received.record(0, 3); // never acked, received: not overdue either way
        // 1, 2 and 4 acked and missing; 3 not acked and so not watched.
        assert_eq!(acks.overdue(&received, &[5]), 3);
        received.record(0, 2);
        assert_eq!(acks.overdue(&received, &[5]), 2);
        acks.record_ok(0, 5);
        assert_eq!(acks.overdue(&received, &[6]), 3);
        for c in [1, 4, 5] {
            received.record(0, c);
        }
        assert_eq!(acks.overdue(&received, &[6]), 0);
    }
}
