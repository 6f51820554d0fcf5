//! The distributor configuration: `Config::from_toml` and `validate` on
//! arbitrary text (lossy UTF-8).
//!
//! Checks: nothing panics; a config that `validate` accepts has every
//! property `validate` promises (crates/logdist/src/config.rs), and the
//! runtime pieces built from it (`IngestDecoder`, `PriorityTable`) can be
//! built.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use logdist::Config;
use logdist_wire::{IngestDecoder, IngestLimits, MAX_FRAME_BYTES_CEILING, PriorityTable};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::from_toml(&text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    assert!(!config.listeners.is_empty());
    let analyzers = &config.analyzers;
    assert!(analyzers.queue_capacity >= 1);
    assert!(analyzers.window >= 1);
    assert!(!analyzers.ack_timeout.is_zero());
    assert!(!analyzers.reconnect_min.is_zero());
    assert!(analyzers.reconnect_min <= analyzers.reconnect_max);
    let mut ids = HashSet::new();
    for analyzer in &analyzers.statics {
        assert!(!analyzer.id.is_empty() && ids.insert(&analyzer.id));
        assert!(analyzer.weight.is_finite() && analyzer.weight >= 0.0);
        assert!(!analyzer.address.is_empty());
    }
    let delivery = &config.delivery;
    assert!(
        delivery
            .hold_timeout
            .is_none_or(|timeout| !timeout.is_zero())
    );
    assert!(delivery.max_attempts >= 1);
    assert!(!delivery.dead_letter_path.as_os_str().is_empty());
    let limits = &config.limits;
    assert!((5..=MAX_FRAME_BYTES_CEILING).contains(&limits.max_frame_bytes));
    assert!(limits.max_line_bytes >= 1);
    assert!(limits.max_decompressed_bytes >= 1);
    assert!(limits.max_connections >= 1);
    assert_eq!(
        config.admin.address().is_some(),
        !config.admin.listen.is_empty()
    );
    assert!(!config.metrics.interval.is_zero());

    // What server.rs builds from it.
    let table = PriorityTable::new(config.priorities.levels.clone(), config.priorities.default);
    let limits = IngestLimits {
        max_frame_bytes: limits.max_frame_bytes,
        max_line_bytes: limits.max_line_bytes,
        max_decompressed_bytes: limits.max_decompressed_bytes,
    };
    drop(IngestDecoder::new(limits, Arc::new(table)));
});
