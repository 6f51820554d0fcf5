//! Nanoseconds per message on the hot paths: ingest of a 64 KiB read buffer
//! of binary frames, NDJSON lines or syslog messages (both framings), and
//! encoding a batch for an analyzer (syslog parsed into JSON for ndjson).

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logdist_wire::{
    AnalyzerFormat, Decoded, IngestDecoder, IngestLimits, Message, OutboundBatch, PriorityTable,
    encode_frame, encode_octet_counted, encode_syslog_line,
};
use tokio_util::codec::Decoder;

const BUFFER_BYTES: usize = 64 * 1024;
const PAYLOAD_BYTES: usize = 507; // 512-byte frames

/// A read buffer of whole messages and how many it holds.
fn buffer_of(mut push: impl FnMut(usize, &mut BytesMut)) -> (BytesMut, usize) {
    let mut buf = BytesMut::with_capacity(BUFFER_BYTES + 1024);
    let mut count = 0;
    while buf.len() < BUFFER_BYTES - 600 {
        push(count, &mut buf);
        count += 1;
    }
    (buf, count)
}

fn frames() -> (BytesMut, usize) {
    buffer_of(|i, buf| encode_frame((i % 8) as u8, &[b'p'; PAYLOAD_BYTES], buf))
}

fn ndjson_lines() -> (BytesMut, usize) {
    const LEVELS: [&str; 4] = ["info", "ERROR", "Debug", "warn"];
    buffer_of(|i, buf| {
        let line = format!(
            "{{\"timestamp\":\"2024-05-01T12:00:00.{i:06}Z\",\"level\":\"{}\",\"source\":\"emitter-7\",\"message\":\"{}\",\"metadata\":{{\"seq\":{i},\"host\":\"node-3\"}}}}\n",
            LEVELS[i % LEVELS.len()],
            "m".repeat(380),
        );
        buf.extend_from_slice(line.as_bytes());
    })
}

/// About 512-byte RFC 5424 messages, every severity, with structured data.
fn syslog_message(i: usize) -> Vec<u8> {
    format!(
        "<{}>1 2024-05-01T12:00:00.{i:06}Z node-3 emitter-7 4711 ID47 [meta@1 seq=\"{i}\" host=\"node-3\"] {}",
        128 + i % 8,
        "m".repeat(400),
    )
    .into_bytes()
}

fn syslog_lines() -> (BytesMut, usize) {
    buffer_of(|i, buf| encode_syslog_line(&syslog_message(i), buf))
}

fn syslog_octet_counted() -> (BytesMut, usize) {
    buffer_of(|i, buf| encode_octet_counted(&syslog_message(i), buf))
}

fn bench_ingest(c: &mut Criterion, name: &str, (input, count): (BytesMut, usize)) {
    let table = Arc::new(PriorityTable::default());
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || {
                (
                    IngestDecoder::new(IngestLimits::default(), table.clone()),
                    input.clone(),
                )
            },
            |(decoder, buf)| {
                let mut decoded = 0;
                while let Some(item) = decoder.decode(buf).unwrap() {
                    assert!(matches!(item, Decoded::Message(_)));
                    black_box(item);
                    decoded += 1;
                }
                assert_eq!(decoded, count);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    bench_ingest(c, "binary_frames_512b", frames());
    bench_ingest(c, "ndjson_lines_512b", ndjson_lines());
    bench_ingest(c, "syslog_lf_512b", syslog_lines());
    bench_ingest(c, "syslog_octet_counted_512b", syslog_octet_counted());
}

fn outbound(c: &mut Criterion) {
    let table = PriorityTable::default();
    let (frames, _) = frames();
    let frame_messages: Vec<Message> = {
        let mut decoder = IngestDecoder::new(IngestLimits::default(), Arc::new(table.clone()));
        let mut buf = frames;
        std::iter::from_fn(|| match decoder.decode(&mut buf).unwrap() {
            Some(Decoded::Message(message)) => Some(message),
            _ => None,
        })
        .collect()
    };
    let (lines, _) = ndjson_lines();
    let line_messages: Vec<Message> = lines
        .freeze()
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| Message::from_ndjson_line(3, Bytes::copy_from_slice(line)))
        .collect();

    let syslog_messages: Vec<Message> = {
        let mut decoder = IngestDecoder::new(IngestLimits::default(), Arc::new(table.clone()));
        let (mut buf, _) = syslog_octet_counted();
        std::iter::from_fn(|| match decoder.decode(&mut buf).unwrap() {
            Some(Decoded::Message(message)) => Some(message),
            _ => None,
        })
        .collect()
    };

    let mut group = c.benchmark_group("outbound");
    let cases = [
        ("frames_as_frame", &frame_messages, AnalyzerFormat::Frame),
        ("lines_as_frame", &line_messages, AnalyzerFormat::Frame),
        ("lines_as_ndjson", &line_messages, AnalyzerFormat::Ndjson),
        ("frames_as_ndjson", &frame_messages, AnalyzerFormat::Ndjson),
        ("syslog_as_frame", &syslog_messages, AnalyzerFormat::Frame),
        ("syslog_as_ndjson", &syslog_messages, AnalyzerFormat::Ndjson),
    ];
    for (name, messages, format) in cases {
        group.throughput(Throughput::Elements(messages.len() as u64));
        let mut batch = OutboundBatch::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                batch.clear();
                for message in messages.iter() {
                    batch.push(message, format);
                }
                black_box(batch.byte_len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, outbound);
criterion_main!(benches);
