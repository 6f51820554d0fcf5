//! `close_and_drain` racing producers: every envelope is accounted for exactly
//! once, in every interleaving we can provoke.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use bytes::Bytes;
use logdist_router::{Envelope, PriorityQueues, PushErrorKind};
use logdist_wire::Message;
use tokio::sync::Notify;

const PRODUCERS: u64 = 2;
const ROUNDS: u64 = 200;

fn envelope(priority: u8, id: u64) -> Envelope {
    Envelope::new(Message::from_ndjson_line(
        priority,
        Bytes::copy_from_slice(&id.to_be_bytes()),
    ))
}

fn id(envelope: &Envelope) -> u64 {
    u64::from_be_bytes(envelope.message.data()[..8].try_into().unwrap())
}

/// What one producer saw.
#[derive(Default)]
struct Outcomes {
    attempts: usize,
    accepted: Vec<u64>,
    closed: usize,
    full: usize,
}

#[test]
fn every_pushed_envelope_is_drained_or_refused() {
    for round in 0..ROUNDS {
        // Room for most pushes until the close (some are still refused as full).
        let queues = Arc::new(PriorityQueues::new(1_000, Arc::new(Notify::new())));
        let start = Arc::new(Barrier::new(PRODUCERS as usize + 1));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let queues = queues.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    let mut outcomes = Outcomes::default();
                    // Push until the close is seen, then a few more.
                    let mut after_close = 0;
                    let mut seq = 0;
                    while after_close < 10 {
                        let id = producer << 32 | seq;
                        let priority = ((seq * 37 + producer) % 4) as u8;
                        seq += 1;
                        outcomes.attempts += 1;
                        match queues.push(envelope(priority, id)) {
                            Ok(()) => outcomes.accepted.push(id),
                            Err(refused) => {
                                assert_eq!(id, self::id(&refused.envelope));
                                match refused.kind {
                                    PushErrorKind::Closed => {
                                        outcomes.closed += 1;
                                        after_close += 1;
                                    }
                                    PushErrorKind::Full => outcomes.full += 1,
                                }
                            }
                        }
                    }
                    outcomes
                })
            })
            .collect();

        // The analyzer's consumer takes a varying number of envelopes, then
        // stops; only then may the queues be closed.
        let consumer = {
            let queues = queues.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut popped = Vec::new();
                while popped.len() < (round % 7 * 30) as usize {
                    match queues.pop() {
                        Some(envelope) => popped.push(id(&envelope)),
                        None => thread::yield_now(),
                    }
                }
                popped
            })
        };
        let popped = consumer.join().unwrap();
        let drained = queues.close_and_drain();
        let outcomes: Vec<Outcomes> = producers.into_iter().map(|p| p.join().unwrap()).collect();

        assert!(
            drained
                .windows(2)
                .all(|w| w[0].priority() <= w[1].priority()),
            "drain returns priority order"
        );
        let delivered: Vec<u64> = popped
            .iter()
            .copied()
            .chain(drained.iter().map(id))
            .collect();
        let delivered_ids: HashSet<u64> = delivered.iter().copied().collect();
        assert_eq!(
            delivered_ids.len(),
            delivered.len(),
            "an envelope came out twice"
        );
        let accepted: HashSet<u64> = outcomes
            .iter()
            .flat_map(|o| o.accepted.iter().copied())
            .collect();
        assert_eq!(
            delivered_ids, accepted,
            "round {round}: accepted but neither popped nor drained, or the reverse"
        );
        assert_eq!(queues.enqueued(), accepted.len() as u64);
        assert!(outcomes.iter().all(|o| o.closed == 10));
        assert!(queues.is_closed());
        assert_eq!(queues.len(), 0);
        assert!(queues.pop().is_none());
        for o in &outcomes {
            assert_eq!(o.accepted.len() + o.closed + o.full, o.attempts);
        }
    }
}
