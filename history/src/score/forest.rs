//! An isolation forest (Liu, Ting, Zhou 2008): anomalies are isolated by fewer random splits
//! than typical points. Unsupervised, trained on the host's own connections.
//!
//! Written here rather than taken from crates.io: the crates found (extended-isolation-forest,
//! isolation_forest, isoforest) are unmaintained since 2022 or pull in ndarray/linfa/csv for
//! what is a hundred lines.

use rand::{seq::index::sample, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::features::{Features, FEATURE_COUNT};

#[derive(Clone, Debug)]
enum Node {
    Split {
        feature: u8,
        value: f32,
        left: u32,
        right: u32,
    },
    Leaf {
        size: u32,
    },
}

#[derive(Clone, Debug)]
struct Tree {
    nodes: Vec<Node>,
}

/// A trained forest.
#[derive(Clone, Debug)]
pub struct IsolationForest {
    trees: Vec<Tree>,
    /// Average path length of an unsuccessful search in a tree of `sample_size` rows: the
    /// normaliser of the score.
    normaliser: f64,
    rows: usize,
}

impl IsolationForest {
    /// Trains `trees` trees on random subsets of `sample_size` rows (all rows when fewer).
    /// The seed makes training reproducible. `None` with no rows.
    pub fn train(rows: &[Features], trees: usize, sample_size: usize, seed: u64) -> Option<Self> {
        if rows.is_empty() || trees == 0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let psi = sample_size.clamp(2, usize::MAX).min(rows.len());
        let height_limit = (psi as f64).log2().ceil().max(1.0) as usize;
        let trees = (0..trees)
            .map(|_| {
                let mut subset: Vec<&Features> = sample(&mut rng, rows.len(), psi)
                    .into_iter()
                    .map(|i| &rows[i])
                    .collect();
                let mut tree = Tree { nodes: Vec::new() };
                grow(&mut tree, &mut subset, 0, height_limit, &mut rng);
                tree
            })
            .collect();
        Some(IsolationForest {
            trees,
            normaliser: average_path(psi),
            rows: rows.len(),
        })
    }

    /// Anomaly score in (0, 1): about 0.5 and below for typical points, towards 1 for points
    /// isolated early.
    pub fn score(&self, x: &Features) -> f32 {
        let total: f64 = self.trees.iter().map(|t| path_length(t, x)).sum();
        let mean = total / self.trees.len() as f64;
        2f64.powf(-mean / self.normaliser) as f32
    }

    /// Rows the forest was trained on.
    pub fn trained_rows(&self) -> usize {
        self.rows
    }
}

/// Builds the subtree for `rows` and returns its node index.
fn grow(
    tree: &mut Tree,
    rows: &mut [&Features],
    depth: usize,
    limit: usize,
    rng: &mut ChaCha8Rng,
) -> u32 {
    let index = tree.nodes.len() as u32;
    let leaf = Node::Leaf {
        size: rows.len() as u32,
    };
    if depth >= limit || rows.len() <= 1 {
        tree.nodes.push(leaf);
        return index;
    }
    // Features that still vary among these rows; a split on a constant one isolates nothing.
    let mut ranges = [(f32::INFINITY, f32::NEG_INFINITY); FEATURE_COUNT];
    for row in rows.iter() {
        for (range, &v) in ranges.iter_mut().zip(row.iter()) {
            range.0 = range.0.min(v);
            range.1 = range.1.max(v);
        }
    }
    let varying: Vec<usize> = (0..FEATURE_COUNT)
        .filter(|&f| ranges[f].1 > ranges[f].0)
        .collect();
    if varying.is_empty() {
        tree.nodes.push(leaf);
        return index;
    }
    let feature = varying[rng.gen_range(0..varying.len())];
    let (lo, hi) = ranges[feature];
    let value = rng.gen_range(lo..hi);
    tree.nodes.push(leaf); // replaced below once the children exist
    let mut split_at = 0;
    for i in 0..rows.len() {
        if rows[i][feature] < value {
            rows.swap(i, split_at);
            split_at += 1;
        }
    }
    // `value` is in [lo, hi), so the row holding `lo` goes left and the one holding `hi` right.
    let (left_rows, right_rows) = rows.split_at_mut(split_at);
    let left = grow(tree, left_rows, depth + 1, limit, rng);
    let right = grow(tree, right_rows, depth + 1, limit, rng);
    tree.nodes[index as usize] = Node::Split {
        feature: feature as u8,
        value,
        left,
        right,
    };
    index
}

fn path_length(tree: &Tree, x: &Features) -> f64 {
    let mut node = 0usize;
    let mut depth = 0.0;
    loop {
        match tree.nodes[node] {
            Node::Leaf { size } => return depth + average_path(size as usize),
            Node::Split {
                feature,
                value,
                left,
                right,
            } => {
                node = if x[feature as usize] < value {
                    left
                } else {
                    right
                } as usize;
                depth += 1.0;
            }
        }
    }
}

/// c(n): the average path length of an unsuccessful binary-search-tree search among n points,
/// which a leaf holding n points adds to the depth.
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_score_above_the_crowd() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let rows: Vec<Features> = (0..2000)
            .map(|_| {
                let mut r = [0f32; FEATURE_COUNT];
                for v in r.iter_mut() {
                    *v = rng.gen_range(0.0..1.0);
                }
                r
            })
            .collect();
        let forest = IsolationForest::train(&rows, 100, 256, 1).unwrap();
        let typical = forest.score(&[0.5; FEATURE_COUNT]);
        // Far out in a few features (a single odd feature among eleven is split on rarely).
        let mut outlier = [0.5; FEATURE_COUNT];
        for f in [1, 3, 5, 7] {
            outlier[f] = 3.0;
        }
        let odd = forest.score(&outlier);
        assert!(odd > typical + 0.1, "outlier {odd} vs typical {typical}");
        assert!(typical < 0.5, "typical {typical}");
        // Same rows, same seed: same model.
        let again = IsolationForest::train(&rows, 100, 256, 1).unwrap();
        assert_eq!(again.score(&outlier), odd);
    }

    #[test]
    fn identical_rows_train_and_score() {
        let rows = vec![[1.0; FEATURE_COUNT]; 50];
        let forest = IsolationForest::train(&rows, 10, 256, 1).unwrap();
        assert!(forest.score(&[1.0; FEATURE_COUNT]).is_finite());
        assert!(IsolationForest::train(&[], 10, 256, 1).is_none());
    }
}
