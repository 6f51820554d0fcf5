//! Weighted selection: which analyzer a point in [0, 1) falls on.

/// Analyzers laid end to end on [0, total weight), each over a stretch as long
/// as its weight; a point scaled to that range picks the analyzer under it.
///
/// The stretches' upper ends, in input order, form a sorted array, and a binary
/// search over a sorted array *is* a walk down a perfectly balanced binary
/// search tree stored implicitly (the middle element is the root, each half a
/// subtree). So a pick costs O(log n) comparisons with no pointers to chase and
/// no rebalancing: the tree is rebuilt whole, off the hot path, whenever a
/// weight changes.
#[derive(Debug, Clone)]
pub struct WeightedTree {
    /// Cumulative weight at the end of each pickable entry's stretch.
    ends: Vec<f64>,
    /// Index into the input slice of each pickable entry.
    indices: Vec<usize>,
}

impl WeightedTree {
    /// A tree over `weights`; entries whose weight is 0, negative or not
    /// finite take no stretch and are never picked.
    pub fn new(weights: &[f64]) -> Self {
        let mut ends = Vec::with_capacity(weights.len());
        let mut indices = Vec::with_capacity(weights.len());
        let mut total = 0.0;
        for (index, &weight) in weights.iter().enumerate() {
            if weight.is_finite() && weight > 0.0 {
                total += weight;
                ends.push(total);
                indices.push(index);
            }
        }
        WeightedTree { ends, indices }
    }

    /// The index (into the weights given to `new`) whose stretch holds `u`,
    /// for `u` in [0, 1); `None` when no weight is positive.
    pub fn pick(&self, u: f64) -> Option<usize> {
        let total = *self.ends.last()?;
        let target = u * total;
        let position = self.ends.partition_point(|&end| end <= target);
        // `u` just below 1 can round onto the last end; it belongs to the last
        // stretch.
        Some(self.indices[position.min(self.indices.len() - 1)])
    }

    /// Sum of the pickable weights.
    pub fn total_weight(&self) -> f64 {
        self.ends.last().copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cursor;

    #[test]
    fn picks_by_stretch() {
        let tree = WeightedTree::new(&[1.0, 0.0, 2.0, 1.0]);
        assert_eq!(tree.total_weight(), 4.0);
        assert_eq!(tree.pick(0.0), Some(0));
        assert_eq!(tree.pick(0.2499), Some(0));
        assert_eq!(tree.pick(0.25), Some(2));
        assert_eq!(tree.pick(0.7499), Some(2));
        assert_eq!(tree.pick(0.75), Some(3));
        assert_eq!(tree.pick(1.0 - f64::EPSILON), Some(3));
    }

    #[test]
    fn no_positive_weight_picks_nothing() {
        for weights in [&[][..], &[0.0, 0.0], &[f64::NAN, -1.0, f64::INFINITY]] {
            let tree = WeightedTree::new(weights);
            assert_eq!(tree.pick(0.5), None);
            assert_eq!(tree.total_weight(), 0.0);
        }
    }

    #[test]
    fn zero_and_invalid_weights_are_never_picked() {
        let tree = WeightedTree::new(&[0.0, 3.0, f64::NAN, 1.0, f64::INFINITY, -2.0]);
        let mut cursor = Cursor::new(7);
        for _ in 0..10_000 {
            let index = tree.pick(cursor.next_point()).unwrap();
            assert!(index == 1 || index == 3, "{index}");
        }
    }

    #[test]
    fn three_to_one_gives_7500_and_2500() {
        let tree = WeightedTree::new(&[3.0, 1.0]);
        let mut cursor = Cursor::new(0);
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            counts[tree.pick(cursor.next_point()).unwrap()] += 1;
        }
        assert!(counts[0].abs_diff(7_500) <= 50, "{counts:?}");
        assert!(counts[1].abs_diff(2_500) <= 50, "{counts:?}");
    }
}
