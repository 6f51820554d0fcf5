//! Which priority each message gets. The choice is a pure function of
//! (run seed, emitter, counter), so an analyzer can recompute it and check that the
//! distributor kept every message's priority.

use crate::profile::{PriorityMode, PrioritySettings};

#[derive(Clone, Debug)]
pub struct PriorityPlan {
    mode: PriorityMode,
    levels: Vec<u8>,
    /// For `Weighted`: cumulative weights scaled to u64::MAX.
    cumulative: Vec<u64>,
    seed: u64,
}

/// SplitMix64 finalizer: a good 64-bit mix for hashing small tuples.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PriorityPlan {
    pub fn new(settings: &PrioritySettings, seed: u64) -> Self {
        let mut cumulative = Vec::new();
        if settings.mode == PriorityMode::Weighted {
            let total: f64 = settings.weights.iter().sum();
            let mut acc = 0.0;
            for w in &settings.weights {
                acc += w / total;
                cumulative.push((acc.min(1.0) * u64::MAX as f64) as u64);
            }
            if let Some(last) = cumulative.last_mut() {
                *last = u64::MAX;
            }
        }
        PriorityPlan {
            mode: settings.mode,
            levels: settings.levels.clone(),
            cumulative,
            seed,
        }
    }

    /// The priority of message `counter` of emitter `emitter`.
    pub fn priority_for(&self, emitter: u32, counter: u64) -> u8 {
        match self.mode {
            PriorityMode::Single => self.levels[0],
            PriorityMode::Cyclic => {
                let i = (counter + u64::from(emitter)) % self.levels.len() as u64;
                self.levels[i as usize]
            }
            PriorityMode::Random => {
                let h = self.hash(emitter, counter);
                self.levels[(h % self.levels.len() as u64) as usize]
            }
            PriorityMode::Weighted => {
                let h = self.hash(emitter, counter);
                let i = self.cumulative.partition_point(|&c| c < h);
                self.levels[i.min(self.levels.len() - 1)]
            }
        }
    }

    fn hash(&self, emitter: u32, counter: u64) -> u64 {
        mix(self.seed ^ mix(u64::from(emitter) << 40 ^ counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: PriorityMode, levels: Vec<u8>, weights: Vec<f64>) -> PriorityPlan {
        PriorityPlan::new(
            &PrioritySettings {
                mode,
                levels,
                weights,
            },
            7,
        )
    }

    #[test]
    fn single_and_cyclic() {
        let p = plan(PriorityMode::Single, vec![5, 9], vec![]);
        assert!((0..100).all(|c| p.priority_for(3, c) == 5));
        let p = plan(PriorityMode::Cyclic, vec![0, 1, 2], vec![]);
        let seq: Vec<u8> = (0..6).map(|c| p.priority_for(0, c)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_follows_weights_and_is_deterministic() {
        let p = plan(PriorityMode::Weighted, vec![0, 3, 7], vec![1.0, 3.0, 6.0]);
        let mut counts = [0u32; 3];
        for c in 0..100_000 {
            let pr = p.priority_for(1, c);
            assert_eq!(pr, p.priority_for(1, c));
            counts[[0, 3, 7].iter().position(|&l| l == pr).unwrap()] += 1;
        }
        let share = |i: usize| f64::from(counts[i]) / 100_000.0;
        assert!((share(0) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(2) - 0.6).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn random_uses_every_level() {
        let p = plan(PriorityMode::Random, vec![1, 2, 3, 4], vec![]);
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..1000 {
            seen.insert(p.priority_for(2, c));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }
}
