//! Random sequences of appends, acknowledgements, reads, reopens and torn
//! tails against a model: after every reopen the spool returns exactly the
//! records appended and not acknowledged, less those a cut took.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use logdist_spool::{Record, RecordId, Spool, SpoolConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        priority: u8,
        kind: u8,
        len: usize,
    },
    /// Acknowledges a live record (chosen by index modulo their number).
    Ack(usize),
    /// Acknowledges any record ever appended: maybe again, maybe one a cut
    /// took.
    AckAny(usize),
    /// Waits for the last append to be durable and reads a live record.
    Read(usize),
    Reopen,
    /// Closes, cuts the newest segment file (at a fraction of its length,
    /// in thousandths) and reopens.
    CutAndReopen(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), 0usize..80)
            .prop_map(|(priority, kind, len)| Op::Append { priority, kind, len }),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckAny),
        1 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Reopen),
        1 => (0u16..=1000).prop_map(Op::CutAndReopen),
    ]
}

struct Model {
    /// Appended, not acknowledged, not cut: what a reopen must return.
    live: Vec<(RecordId, Record)>,
    /// Every append whose segment file is still there: (id, bytes).
    history: Vec<(RecordId, u64)>,
}

/// Closes and reopens the spool; the new one and its torn tails.
fn reopen(config: &SpoolConfig, spool: Arc<Spool>, model: &mut Model) -> (Arc<Spool>, u64) {
    drop(spool);
    let (spool, recovered) = open(config);
    assert_eq!(recovered.records, index(&model.live));
    assert_reads(&spool, &model.live);
    // Numbers of segments no longer on disk may be used again (an empty
    // directory starts over at 1): their ids are not this spool's any more.
    model
        .history
        .retain(|(id, _)| segment_file(&config.dir, id.segment()).exists());
    (spool, recovered.torn_tails)
}

/// Cuts the newest segment at `thousandths` of its length; what the model
/// loses, and whether the cut was inside a record (or header).
fn cut_newest(dir: &Path, thousandths: u16, model: &mut Model) -> bool {
    let newest = newest_segment(dir);
    let path = segment_file(dir, newest);
    let len = std::fs::metadata(&path).unwrap().len();
    let cut = len * u64::from(thousandths) / 1000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let ends = |id: &RecordId, bytes: u64| u64::from(id.offset()) + bytes;
    let bytes_of = |id: &RecordId| {
        model
            .history
            .iter()
            .find(|(h, _)| h == id)
            .map(|(_, bytes)| *bytes)
            .unwrap()
    };
    let boundary = cut == 0
        || cut == 16
        || model
            .history
            .iter()
            .any(|(id, bytes)| id.segment() == newest && ends(id, *bytes) == cut);
    let lost: Vec<RecordId> = model
        .live
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| id.segment() == newest && ends(id, bytes_of(id)) > cut)
        .collect();
    model.live.retain(|(id, _)| !lost.contains(id));
    !boundary
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 256;
    let runtime = runtime();
    let (mut spool, _) = open(&config);
    let mut model = Model {
        live: Vec::new(),
        history: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Append {
                priority,
                kind,
                len,
            } => {
                let record = Record {
                    priority,
                    kind,
                    payload: Bytes::from(vec![kind ^ len as u8; len]),
                };
                let id = spool.try_append(&record).unwrap();
                if let Some((last, _)) = model.history.last() {
                    assert!(id > *last, "ids grow, across reopens too");
                }
                model.history.push((id, record_len(&record)));
                model.live.push((id, record));
            }
            Op::Ack(pick) if !model.live.is_empty() => {
                let (id, _) = model.live.remove(pick % model.live.len());
                spool.ack(&[id]);
            }
            Op::AckAny(pick) if !model.history.is_empty() => {
                let (id, _) = model.history[pick % model.history.len()];
                spool.ack(&[id]);
                model.live.retain(|(live, _)| *live != id);
            }
            Op::Read(pick) if !model.live.is_empty() => {
                let last = model.history.last().unwrap().0;
                runtime.block_on(bounded("durable", spool.durable(last)));
                let (id, record) = &model.live[pick % model.live.len()];
                assert_eq!(&spool.read(*id).unwrap(), record);
            }
            Op::Reopen => {
                let torn;
                (spool, torn) = reopen(&config, spool, &mut model);
                assert_eq!(torn, 0);
            }
            Op::CutAndReopen(thousandths) => {
                spool.close();
                let inside = files(dir.path()).iter().any(|n| n.ends_with(".seg"))
                    && cut_newest(dir.path(), thousandths, &mut model);
                let torn;
                (spool, torn) = reopen(&config, spool, &mut model);
                assert_eq!(torn, u64::from(inside));
            }
            _ => {}
        }
    }
    let (_, torn) = reopen(&config, spool, &mut model);
    assert_eq!(torn, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_spool_returns_what_the_model_keeps(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
