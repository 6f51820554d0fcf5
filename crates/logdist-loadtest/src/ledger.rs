//! Exact accounting of which messages arrived: one bit per (emitter, counter).
//!
//! A message is recorded when an analyzer *commits* it (acks it); a second commit of
//! the same message is a duplicate. At the end, every counter below the emitter's
//! sent count that has no bit is lost.

/// Counters above this are never a real message of this run.
const MAX_COUNTER: u64 = 1 << 36;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
    /// A counter no emitter of this run can have produced.
    OutOfRange,
}

#[derive(Debug, Default)]
struct EmitterLedger {
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    checksum_failures: u64,
    /// Live loss estimate: counters below `scanned_upto` were checked once...
    scanned_upto: u64,
    /// ...and these of them had not arrived yet at the last check.
    overdue: Vec<u64>,
}

impl EmitterLedger {
    fn is_set(&self, counter: u64) -> bool {
        let word = (counter / 64) as usize;
        word < self.seen.len() && self.seen[word] & (1 << (counter % 64)) != 0
    }

    fn count_set_below(&self, end: u64) -> u64 {
        let full = (end / 64) as usize;
        let mut n: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rem = end % 64;
        if rem > 0
            && let Some(w) = self.seen.get(full)
        {
            n += u64::from((w & ((1u64 << rem) - 1)).count_ones());
        }
        n
    }
}

/// Per-emitter outcome at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmitterAccount {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub checksum_failures: u64,
    /// Received with a counter the emitter never sent.
    pub unexpected: u64,
    /// The first few lost counters, for the report.
    pub first_lost: Vec<u64>,
}

#[derive(Debug)]
pub struct Ledger {
    emitters: Vec<EmitterLedger>,
}

impl Ledger {
    pub fn new(emitters: usize) -> Self {
        Ledger {
            emitters: (0..emitters).map(|_| EmitterLedger::default()).collect(),
        }
    }

    pub fn emitter_count(&self) -> usize {
        self.emitters.len()
    }

    /// Record that message `counter` of `emitter` was processed.
    pub fn record(&mut self, emitter: usize, counter: u64) -> Recorded {
        if counter >= MAX_COUNTER || emitter >= self.emitters.len() {
            return Recorded::OutOfRange;
        }
        let e = &mut self.emitters[emitter];
        let word = (counter / 64) as usize;
        if word >= e.seen.len() {
            let new_len = (word + 1).max(e.seen.len() * 2).max(1024);
            e.seen.resize(new_len, 0);
        }
        let bit = 1u64 << (counter % 64);
        if e.seen[word] & bit != 0 {
            e.duplicates += 1;
            Recorded::Duplicate
        } else {
            e.seen[word] |= bit;
            e.distinct += 1;
            Recorded::New
        }
    }

    /// The received bits of `emitter`: bit `c % 64` of word `c / 64` is set
    /// once message `c` was committed (words past the end are all clear).
    pub fn received_words(&self, emitter: usize) -> &[u64] {
        &self.emitters[emitter].seen
    }

    pub fn record_checksum_failure(&mut self, emitter: usize) {
        if let Some(e) = self.emitters.get_mut(emitter) {
            e.checksum_failures += 1;
        }
    }

    pub fn total_distinct(&self) -> u64 {
        self.emitters.iter().map(|e| e.distinct).sum()
    }

    /// Have all of the first `sent[i]` messages of every emitter arrived?
    pub fn all_received(&self, sent: &[u64]) -> bool {
        self.emitters
            .iter()
            .zip(sent)
            .all(|(e, &s)| e.distinct >= s && e.count_set_below(s) == s)
    }

    /// Messages sent before the cut-off (`sent_before[i]` of emitter i) that have
    /// not arrived yet: the live "lost so far" estimate. Cheap to call every
    /// second: each counter is scanned once, then only the missing ones are rechecked.
    pub fn overdue(&mut self, sent_before: &[u64]) -> u64 {
        let mut total = 0;
        for (e, &upto) in self.emitters.iter_mut().zip(sent_before) {
            let still: Vec<u64> = e
                .overdue
                .iter()
                .copied()
                .filter(|&c| !e.is_set(c))
                .collect();
            e.overdue = still;
            let mut c = e.scanned_upto;
            while c < upto {
                if !e.is_set(c) {
                    e.overdue.push(c);
                }
                c += 1;
            }
            e.scanned_upto = e.scanned_upto.max(upto);
            total += e.overdue.len() as u64;
        }
        total
    }

    /// The final account of `emitter`, which sent `sent` messages.
    pub fn account(&self, emitter: usize, sent: u64) -> EmitterAccount {
        let e = &self.emitters[emitter];
        let received_in_range = e.count_set_below(sent);
        let mut first_lost = Vec::new();
        if received_in_range < sent {
            let mut c = 0;
            while c < sent && first_lost.len() < 10 {
                if !e.is_set(c) {
                    first_lost.push(c);
                }
                c += 1;
            }
        }
        EmitterAccount {
            sent,
            received: received_in_range,
            lost: sent - received_in_range,
            duplicated: e.duplicates,
            checksum_failures: e.checksum_failures,
            unexpected: e.distinct - received_in_range,
            first_lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_loss_and_duplicates() {
        let mut l = Ledger::new(2);
        for c in 0..1000 {
            if c % 100 != 7 {
                assert_eq!(l.record(0, c), Recorded::New);
            }
        }
        assert_eq!(l.record(0, 8), Recorded::Duplicate);
        assert_eq!(l.record(0, 8), Recorded::Duplicate);
        for c in 0..50 {
            l.record(1, c);
        }
        l.record_checksum_failure(1);

        let a = l.account(0, 1000);
        assert_eq!(
            (a.sent, a.received, a.lost, a.duplicated),
            (1000, 990, 10, 2)
        );
        assert_eq!(
            a.first_lost,
            vec![7, 107, 207, 307, 407, 507, 607, 707, 807, 907]
        );
        let b = l.account(1, 50);
        assert_eq!(
            (b.received, b.lost, b.duplicated, b.checksum_failures),
            (50, 0, 0, 1)
        );
        assert!(b.first_lost.is_empty());
        assert!(!l.all_received(&[1000, 50]));
        assert!(l.all_received(&[7, 50]));
        assert_eq!(l.total_distinct(), 1040);
    }

    #[test]
    fn counters_beyond_sent_are_unexpected() {
        let mut l = Ledger::new(1);
        for c in 0..10 {
            l.record(0, c);
        }
        l.record(0, 5000);
        let a = l.account(0, 10);
        assert_eq!((a.received, a.lost, a.unexpected), (10, 0, 1));
        assert_eq!(l.record(0, MAX_COUNTER), Recorded::OutOfRange);
        assert_eq!(l.record(3, 1), Recorded::OutOfRange);
    }

    #[test]
    fn overdue_tracks_late_arrivals() {
        let mut l = Ledger::new(1);
        for c in [0, 1, 3, 4] {
            l.record(0, c);
        }
        assert_eq!(l.overdue(&[5]), 1); // 2 is missing
        l.record(0, 2);
        assert_eq!(l.overdue(&[5]), 0); // it arrived late
        assert_eq!(l.overdue(&[8]), 3); // 5, 6, 7 not here yet
        l.record(0, 6);
        assert_eq!(l.overdue(&[8]), 2);
    }
}
