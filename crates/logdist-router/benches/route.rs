//! Hot-path cost per message: routing into 10 analyzers, and a bare
//! push + pop on one analyzer's queues.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logdist_router::{Cursor, Envelope, PriorityQueues, Router, Wakes};
use logdist_wire::Message;

const BATCH: u64 = 1_000;

fn envelopes() -> Vec<Envelope> {
    let payload = Bytes::from(vec![b'x'; 512]);
    (0..BATCH)
        .map(|i| Envelope::new(Message::from_ndjson_line((i % 8) as u8, payload.clone())))
        .collect()
}

/// Routes a batch into 10 weighted analyzers, then drains them as their
/// writer tasks would: the cost per message of route + push + pop.
fn route_into_ten_analyzers(c: &mut Criterion) {
    let router = Router::new();
    let analyzers: Vec<Arc<PriorityQueues>> = (0..10)
        .map(|i| {
            let queues = Arc::new(PriorityQueues::new(1_000, router.space().clone()));
            router
                .register(format!("a{i}").into(), 1.0 + i as f64, queues.clone())
                .unwrap();
            queues
        })
        .collect();
    let batch = envelopes();
    let mut cursor = Cursor::new(1);

    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("route+push+pop, 10 analyzers", |b| {
        b.iter(|| {
            let table = router.load();
            for envelope in batch.iter().cloned() {
                black_box(
                    table
                        .route(&mut cursor, envelope, &mut Wakes::default())
                        .unwrap(),
                );
            }
            for queues in &analyzers {
                while let Some(envelope) = queues.pop() {
                    black_box(envelope);
                }
            }
        })
    });
    group.finish();
}

fn push_pop(c: &mut Criterion) {
    let queues = PriorityQueues::new(1_000, Arc::new(tokio::sync::Notify::new()));
    let batch = envelopes();

    let mut group = c.benchmark_group("priority_queues");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("push+pop", |b| {
        b.iter(|| {
            for envelope in batch.iter().cloned() {
                queues.push(envelope).unwrap();
            }
            while let Some(envelope) = queues.pop() {
                black_box(envelope);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, route_into_ten_analyzers, push_pop);
criterion_main!(benches);
