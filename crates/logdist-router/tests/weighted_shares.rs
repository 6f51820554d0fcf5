//! The routing promise: each analyzer's share of a connection's messages is
//! its weight's share to within 0.5 % over any 10,000 consecutive messages.

use logdist_router::{Cursor, WeightedTree};
use proptest::prelude::*;

const WINDOW: usize = 10_000;
/// |count / WINDOW − weight / total| must stay within this.
const TOLERANCE: f64 = 0.005;

/// Checks every window of `WINDOW` consecutive picks within `picks`.
fn assert_every_window_within_tolerance(picks: &[usize], weights: &[f64]) {
    let total: f64 = weights.iter().sum();
    let within = |analyzer: usize, count: usize| {
        let share = count as f64 / WINDOW as f64;
        let expected = weights[analyzer] / total;
        assert!(
            (share - expected).abs() <= TOLERANCE,
            "analyzer {analyzer}: share {share} expected {expected} (weights {weights:?})"
        );
    };
    let mut counts = vec![0usize; weights.len()];
    for &analyzer in &picks[..WINDOW] {
        counts[analyzer] += 1;
    }
    for (analyzer, &count) in counts.iter().enumerate() {
        within(analyzer, count);
    }
    // Sliding by one changes two counts; the others were checked already.
    for (leaving, entering) in picks.iter().zip(&picks[WINDOW..]) {
        counts[*leaving] -= 1;
        counts[*entering] += 1;
        within(*leaving, counts[*leaving]);
        within(*entering, counts[*entering]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_window_of_10_000_picks_matches_the_weights(
        weights in prop::collection::vec(0.01f64..100.0, 2..=32),
        seed in any::<u64>(),
        offsets in prop::collection::vec(0usize..1_000_000, 3),
    ) {
        let tree = WeightedTree::new(&weights);
        for offset in offsets {
            let mut cursor = Cursor::new(seed);
            for _ in 0..offset {
                cursor.next_point();
            }
            // 20,000 picks hold 10,001 windows, all of them checked.
            let picks: Vec<usize> = (0..2 * WINDOW)
                .map(|_| tree.pick(cursor.next_point()).unwrap())
                .collect();
            assert_every_window_within_tolerance(&picks, &weights);
        }
    }
}

#[test]
fn weights_with_zeros_share_among_the_rest() {
    let weights = [0.0, 1.0, 0.0, 2.0, 5.0];
    let tree = WeightedTree::new(&weights);
    let mut cursor = Cursor::new(99);
    let picks: Vec<usize> = (0..3 * WINDOW)
        .map(|_| tree.pick(cursor.next_point()).unwrap())
        .collect();
    assert!(picks.iter().all(|&analyzer| weights[analyzer] > 0.0));
    assert_every_window_within_tolerance(&picks, &weights);
}
