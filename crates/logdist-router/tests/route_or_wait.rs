//! Backpressure: a producer waiting in `route_or_wait` is woken by room,
//! never by luck or a timer.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use logdist_router::{Cursor, Envelope, Placed, PriorityQueues, Routed, Router, Wakes};
use logdist_wire::Message;
use tokio::task::JoinHandle;
use tokio::time::timeout;

fn envelope(priority: u8) -> Envelope {
    Envelope::new(Message::from_ndjson_line(
        priority,
        Bytes::from_static(b"{}"),
    ))
}

fn spawn_route_or_wait(router: &Arc<Router>, priority: u8) -> JoinHandle<Placed> {
    let router = router.clone();
    tokio::spawn(async move {
        router
            .route_or_wait(
                &mut Cursor::new(7),
                envelope(priority),
                std::future::pending(),
            )
            .await
            .expect("never gives up")
    })
}

/// Lets the spawned task run until it has nothing left to do but wait.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn wakes_when_the_consumer_pops_from_a_full_level() {
    let router = Arc::new(Router::new());
    let queues = Arc::new(PriorityQueues::new(1, router.space().clone()));
    router.register("a".into(), 1.0, queues.clone()).unwrap();
    router
        .load()
        .route(&mut Cursor::new(0), envelope(4), &mut Wakes::default())
        .unwrap();

    let waiting = spawn_route_or_wait(&router, 4);
    settle().await;
    assert!(!waiting.is_finished(), "the only level it can use is full");

    // Room at another level is no use to it.
    queues.push(envelope(5)).unwrap();
    assert_eq!(queues.pop().unwrap().priority(), 4);
    let routed = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("route_or_wait was not woken by the pop")
        .unwrap();
    assert_eq!(
        routed,
        Placed::Routed(Routed {
            analyzer: 0,
            diverted: false
        })
    );
    assert_eq!((queues.depth(4), queues.depth(5)), (1, 1));
}

#[tokio::test]
async fn wakes_when_an_analyzer_registers() {
    let router = Arc::new(Router::new());
    let waiting = spawn_route_or_wait(&router, 0);
    settle().await;
    assert!(!waiting.is_finished(), "no analyzer to route to");

    let queues = Arc::new(PriorityQueues::new(8, router.space().clone()));
    router.register("late".into(), 1.0, queues.clone()).unwrap();
    timeout(Duration::from_secs(5), waiting)
        .await
        .expect("route_or_wait was not woken by register")
        .unwrap();
    assert_eq!(queues.len(), 1);
}

#[tokio::test]
async fn wakes_when_a_draining_analyzer_gets_weight_back() {
    let router = Arc::new(Router::new());
    let queues = Arc::new(PriorityQueues::new(8, router.space().clone()));
    router.register("a".into(), 0.0, queues.clone()).unwrap();
    let waiting = spawn_route_or_wait(&router, 0);
    settle().await;
    assert!(!waiting.is_finished(), "a draining analyzer takes nothing");

    router.set_weight("a", 2.0).unwrap();
    timeout(Duration::from_secs(5), waiting)
        .await
        .expect("route_or_wait was not woken by set_weight")
        .unwrap();
    assert_eq!(queues.len(), 1);
}

/// A producer routing into one tiny queue, a consumer on another thread
/// popping as fast as it can: almost every message has to wait for room, and
/// a single lost wake-up stalls the producer and fails the timeout.
#[test]
fn no_wake_up_is_lost_under_contention() {
    const MESSAGES: usize = 20_000;
    let router = Arc::new(Router::new());
    let queues = Arc::new(PriorityQueues::new(1, router.space().clone()));
    router.register("a".into(), 1.0, queues.clone()).unwrap();

    let consumer = thread::spawn(move || {
        let mut popped = 0;
        while popped < MESSAGES {
            match queues.pop() {
                Some(_) => popped += 1,
                None => thread::yield_now(),
            }
        }
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cursor = Cursor::new(3);
        for _ in 0..MESSAGES {
            timeout(
                Duration::from_secs(10),
                router.route_or_wait(&mut cursor, envelope(0), std::future::pending()),
            )
            .await
            .expect("producer stalled: a wake-up was lost")
            .expect("never gives up");
        }
    });
    consumer.join().unwrap();
}

#[tokio::test]
async fn giving_up_hands_the_envelope_back() {
    let router = Router::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let waiting = {
        let router = Arc::new(router);
        let r = router.clone();
        let handle = tokio::spawn(async move {
            r.route_or_wait(&mut Cursor::new(1), envelope(9), async {
                let _ = rx.await;
            })
            .await
        });
        settle().await;
        assert!(!handle.is_finished(), "no analyzer: it must wait");
        tx.send(()).unwrap();
        handle
    };
    let back = timeout(Duration::from_secs(10), waiting)
        .await
        .expect("give_up was not honoured")
        .unwrap()
        .expect_err("nothing to route to");
    assert_eq!(back.priority(), 9);
}

#[tokio::test]
async fn with_no_analyzer_messages_are_held_until_the_holding_queue_is_full() {
    let router = Arc::new(Router::with_holding(2));
    let mut cursor = Cursor::new(5);
    for _ in 0..2 {
        let placed = router
            .route_or_wait(&mut cursor, envelope(3), std::future::pending())
            .await
            .unwrap();
        assert_eq!(placed, Placed::Held);
    }
    // The holding queue (2 messages in all) is full: the third producer waits...
    let waiting = spawn_route_or_wait(&router, 3);
    settle().await;
    assert!(
        !waiting.is_finished(),
        "a full holding queue must push back"
    );
    // ...until an analyzer arrives, which takes it directly.
    let queues = Arc::new(PriorityQueues::new(10, router.space().clone()));
    router.register("a".into(), 1.0, queues.clone()).unwrap();
    let placed = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("not woken by register")
        .unwrap();
    assert!(matches!(placed, Placed::Routed(_)), "{placed:?}");
    let holding = router.holding().unwrap();
    assert_eq!(holding.len(), 2, "held messages wait for their consumer");
    assert_eq!(queues.len(), 1);
}

#[tokio::test]
async fn a_draining_only_table_holds_too() {
    let router = Router::with_holding(10);
    let queues = Arc::new(PriorityQueues::new(10, router.space().clone()));
    router.register("d".into(), 0.0, queues.clone()).unwrap();
    let placed = router
        .route_or_wait(&mut Cursor::new(1), envelope(0), std::future::pending())
        .await
        .unwrap();
    assert_eq!(placed, Placed::Held);
    assert!(queues.is_empty());
}
