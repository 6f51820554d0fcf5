//! Many producer threads against one consumer: strict priority, FIFO per
//! producer within a level, wake-ups, and exact accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logdist_router::{Envelope, PriorityQueues, PushErrorKind};
use logdist_wire::Message;
use tokio::sync::Notify;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 20_000;
/// Producer id of the envelope pushed after all the others.
const LAST: u64 = u64::MAX;

/// An envelope carrying who pushed it and its sequence number.
fn envelope(priority: u8, producer: u64, seq: u64) -> Envelope {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&producer.to_be_bytes());
    payload[8..].copy_from_slice(&seq.to_be_bytes());
    Envelope::new(Message::from_ndjson_line(
        priority,
        Bytes::copy_from_slice(&payload),
    ))
}

fn origin(envelope: &Envelope) -> (u64, u64) {
    let data = envelope.message.data();
    (
        u64::from_be_bytes(data[..8].try_into().unwrap()),
        u64::from_be_bytes(data[8..16].try_into().unwrap()),
    )
}

/// xorshift64*: random priorities without a dependency.
fn random_priorities(seed: u64) -> impl Iterator<Item = u8> {
    let mut state = seed | 1;
    std::iter::repeat_with(move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    })
}

/// Pushes from every producer at once; returns how many pushes were refused
/// as full, over all producers.
fn push_from_threads(queues: &Arc<PriorityQueues>) -> u64 {
    let start = Arc::new(Barrier::new(PRODUCERS as usize));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let queues = queues.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut full = 0;
                for (seq, priority) in (0..PER_PRODUCER).zip(random_priorities(producer + 1)) {
                    match queues.push(envelope(priority, producer, seq)) {
                        Ok(()) => {}
                        Err(refused) => {
                            assert_eq!(refused.kind, PushErrorKind::Full);
                            full += 1;
                        }
                    }
                }
                full
            })
        })
        .collect();
    producers.into_iter().map(|p| p.join().unwrap()).sum()
}

#[test]
fn with_the_consumer_paused_pop_order_is_by_priority_then_fifo() {
    let queues = Arc::new(PriorityQueues::new(
        usize::MAX >> 2,
        Arc::new(Notify::new()),
    ));
    assert_eq!(push_from_threads(&queues), 0);
    assert_eq!(queues.len() as u64, PRODUCERS * PER_PRODUCER);
    assert_eq!(queues.enqueued(), PRODUCERS * PER_PRODUCER);

    let popped: Vec<Envelope> = std::iter::from_fn(|| queues.pop()).collect();
    assert_eq!(popped.len() as u64, PRODUCERS * PER_PRODUCER);
    assert!(
        popped
            .windows(2)
            .all(|w| w[0].priority() <= w[1].priority()),
        "pop order must be sorted by priority"
    );
    // Within a level, each producer's envelopes come out in the order it
    // pushed them.
    let mut last_seq = vec![[None::<u64>; 256]; PRODUCERS as usize];
    for envelope in &popped {
        let (producer, seq) = origin(envelope);
        let last = &mut last_seq[producer as usize][usize::from(envelope.priority())];
        assert!(
            last.is_none_or(|last| last < seq),
            "FIFO broken within a level"
        );
        *last = Some(seq);
    }
    assert_eq!(queues.len(), 0);
}

#[test]
fn a_sleeping_consumer_is_always_woken_and_receives_everything() {
    // A small capacity so producers also hit Full while the consumer runs.
    let queues = Arc::new(PriorityQueues::new(64, Arc::new(Notify::new())));

    let consumer = {
        let queues = queues.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut received = Vec::new();
                let mut saw_last = false;
                loop {
                    while let Some(envelope) = queues.pop() {
                        if origin(&envelope).0 == LAST {
                            saw_last = true;
                        } else {
                            received.push(envelope);
                        }
                    }
                    if saw_last {
                        // Pushed after every other push returned, and this
                        // pop loop then ran to `None`: nothing is left.
                        return received;
                    }
                    // Only a notify may wake us; a lost wake-up fails here
                    // instead of hanging the test.
                    tokio::time::timeout(Duration::from_secs(10), queues.notified())
                        .await
                        .expect("consumer never woken");
                }
            })
        })
    };

    let full = push_from_threads(&queues);
    let mut last = envelope(255, LAST, 0);
    while let Err(refused) = queues.push(last) {
        last = refused.envelope;
        thread::yield_now();
    }
    let received = consumer.join().unwrap();

    assert_eq!(received.len() as u64 + full, PRODUCERS * PER_PRODUCER);
    assert_eq!(queues.enqueued(), received.len() as u64 + 1);
    assert!(queues.is_empty());
    let mut last_seq = vec![[None::<u64>; 256]; PRODUCERS as usize];
    for envelope in &received {
        let (producer, seq) = origin(envelope);
        let last = &mut last_seq[producer as usize][usize::from(envelope.priority())];
        assert!(
            last.is_none_or(|last| last < seq),
            "FIFO broken within a level"
        );
        *last = Some(seq);
    }
}

/// Ping-pong: the producer pushes a burst to one of a few levels, then waits
/// until the consumer has received everything. Pushes keep landing just as
/// the consumer finds a level's bit set on an empty queue and clears it, or
/// just as it goes to sleep. An envelope stranded there (bit off, or no
/// wake-up) is never popped, since the producer pushes nothing more until the
/// consumer has everything, and the producer's wait times out.
fn ping_pong(rounds: u64, consumer_sleeps: bool) {
    let queues = Arc::new(PriorityQueues::new(16, Arc::new(Notify::new())));
    let received = Arc::new(AtomicU64::new(0));

    let consumer = {
        let queues = queues.clone();
        let received = received.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                loop {
                    while let Some(envelope) = queues.pop() {
                        if origin(&envelope).0 == LAST {
                            return;
                        }
                        received.fetch_add(1, Ordering::Release);
                    }
                    if consumer_sleeps {
                        tokio::time::timeout(Duration::from_secs(10), queues.notified())
                            .await
                            .expect("consumer never woken");
                    } else {
                        std::hint::spin_loop();
                    }
                }
            })
        })
    };

    let mut pushed = 0;
    for (round, priority) in (0..rounds).zip(random_priorities(9)) {
        for _ in 0..=round % 8 {
            queues.push(envelope(priority % 3, 0, pushed)).unwrap();
            pushed += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::Acquire) < pushed {
            assert!(
                Instant::now() < deadline,
                "round {round}: an envelope was stranded"
            );
            std::hint::spin_loop();
        }
    }
    queues.push(envelope(0, LAST, 0)).unwrap();
    consumer.join().unwrap();
    assert!(queues.is_empty());
}

#[test]
fn pushes_racing_a_busy_consumer_are_never_stranded() {
    ping_pong(50_000, false);
}

#[test]
fn pushes_racing_a_sleeping_consumer_always_wake_it() {
    ping_pong(5_000, true);
}
