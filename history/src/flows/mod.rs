//! Connections in flight, held in bounded maps: TCP connections waiting for their close
//! record, and UDP flows aggregated from datagram events. A full map writes out (UDP) or
//! forgets (TCP) its least recently active eighth, and counts them.

pub mod tcp;
pub mod udp;

use std::hash::Hash;

/// The keys of the `share` (1/share, at least one) oldest items by time.
fn oldest<K: Copy + Eq + Hash>(items: impl Iterator<Item = (K, i64)>, share: usize) -> Vec<K> {
    let mut all: Vec<(i64, K)> = items.map(|(k, t)| (t, k)).collect();
    let n = (all.len() / share).max(1).min(all.len());
    if n < all.len() {
        all.select_nth_unstable_by_key(n, |(t, _)| *t);
    }
    all.truncate(n);
    all.into_iter().map(|(_, k)| k).collect()
}
