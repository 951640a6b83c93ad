//! The matching tables of every loaded feed together.
//!
//! Addresses: CIDRs of all feeds as ranges sorted by start, each knowing the nearest range
//! that contains it (CIDRs are nested or disjoint). A lookup is one binary search for the
//! last range starting at or below the address, then a walk up its containers: every
//! containing range, of every feed, lies on that walk, most specific first.
//! Hashes: digests sorted, binary-searched.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::parse::Entries;
use crate::{FeedHit, FeedKind, Sha256};

/// One feed's current copy.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub name: String,
    pub entries: Entries,
}

const NONE: u32 = u32::MAX;

struct Range<T> {
    end: T,
    /// The nearest range containing this one, or `NONE`.
    parent: u32,
    feed: u16,
    net: IpNet,
}

struct RangeTable<T> {
    /// Kept apart from the rest for a cache-friendly binary search.
    starts: Vec<T>,
    ranges: Vec<Range<T>>,
}

impl<T: Copy + Ord> RangeTable<T> {
    fn build(mut items: Vec<(T, T, u16, IpNet)>) -> Self {
        // Containers before what they contain. The same range in two feeds is kept once for
        // each, the later feed nested in the earlier, so a walk up names them in feed order.
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        items.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        let mut starts = Vec::with_capacity(items.len());
        let mut ranges: Vec<Range<T>> = Vec::with_capacity(items.len());
        let mut open: Vec<u32> = Vec::new();
        for (start, end, feed, net) in items {
            while let Some(&top) = open.last() {
                if ranges[top as usize].end >= end {
                    break;
                }
                open.pop();
            }
            // After the pops, the top (if any) ends at or after `end` and starts at or before
            // `start`: it contains this range.
            let parent = open.last().copied().unwrap_or(NONE);
            open.push(ranges.len() as u32);
            starts.push(start);
            ranges.push(Range {
                end,
                parent,
                feed,
                net,
            });
        }
        RangeTable { starts, ranges }
    }

    /// Calls `hit` with the feed and CIDR of every range containing `x`, most specific first.
    fn find(&self, x: T, mut hit: impl FnMut(u16, &IpNet)) {
        let after = self.starts.partition_point(|s| *s <= x);
        let mut i = match after.checked_sub(1) {
            Some(i) => i as u32,
            None => return,
        };
        while i != NONE {
            let range = &self.ranges[i as usize];
            if range.end >= x {
                hit(range.feed, &range.net);
            }
            i = range.parent;
        }
    }
}

/// Everything the matchers need, rebuilt whenever a feed's copy changes.
pub(crate) struct FeedSet {
    names: Vec<String>,
    v4: RangeTable<u32>,
    v6: RangeTable<u128>,
    hashes: Vec<(Sha256, u16)>,
}

impl FeedSet {
    pub fn build(feeds: &[Arc<Loaded>]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut hashes = Vec::new();
        for (i, feed) in feeds.iter().enumerate() {
            let i = i as u16;
            match &feed.entries {
                Entries::Ip(nets) => {
                    for net in nets {
                        match net {
                            IpNet::V4(n) => {
                                v4.push((n.network().into(), n.broadcast().into(), i, *net))
                            }
                            IpNet::V6(n) => {
                                v6.push((n.network().into(), n.broadcast().into(), i, *net))
                            }
                        }
                    }
                }
                Entries::Sha256(list) => hashes.extend(list.iter().map(|h| (*h, i))),
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        FeedSet {
            names: feeds.iter().map(|f| f.name.clone()).collect(),
            v4: RangeTable::build(v4),
            v6: RangeTable::build(v6),
            hashes,
        }
    }

    /// One hit per feed listing `ip`: its most specific entry.
    pub fn match_ip(&self, ip: IpAddr) -> Vec<FeedHit> {
        let mut hits: Vec<FeedHit> = Vec::new();
        let mut record = |feed: u16, net: &IpNet| {
            let name = &self.names[usize::from(feed)];
            if !hits.iter().any(|h| &h.feed == name) {
                hits.push(FeedHit {
                    feed: name.clone(),
                    entry: net.to_string(),
                    kind: FeedKind::Ip,
                });
            }
        };
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.find(u32::from(a), &mut record),
            IpAddr::V6(a) => self.v6.find(u128::from(a), &mut record),
        }
        hits
    }

    pub fn match_sha256(&self, sha256: &Sha256) -> Vec<FeedHit> {
        let from = self.hashes.partition_point(|(h, _)| h < sha256);
        self.hashes[from..]
            .iter()
            .take_while(|(h, _)| h == sha256)
            .map(|(h, feed)| FeedHit {
                feed: self.names[usize::from(*feed)].clone(),
                entry: h.to_string(),
                kind: FeedKind::Sha256,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(name: &str, nets: &[&str]) -> Arc<Loaded> {
        Arc::new(Loaded {
            name: name.into(),
            entries: Entries::Ip(nets.iter().map(|n| n.parse().unwrap()).collect()),
        })
    }

    fn hits(set: &FeedSet, ip: &str) -> Vec<(String, String)> {
        set.match_ip(ip.parse().unwrap())
            .into_iter()
            .map(|h| (h.feed, h.entry))
            .collect()
    }

    #[test]
    fn nested_ranges_of_several_feeds_all_match_most_specific_first() {
        let set = FeedSet::build(&[
            loaded("wide", &["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]),
            loaded(
                "narrow",
                &["10.1.0.0/16", "10.1.2.3/32", "10.2.0.0/16", "10.0.0.0/8"],
            ),
        ]);
        let pair = |f: &str, e: &str| (f.to_string(), e.to_string());
        assert_eq!(
            hits(&set, "10.1.2.3"),
            [pair("narrow", "10.1.2.3/32"), pair("wide", "10.0.0.0/8")]
        );
        // Past the end of a nested range, its container still matches.
        assert_eq!(
            hits(&set, "10.1.9.9"),
            [pair("narrow", "10.1.0.0/16"), pair("wide", "10.0.0.0/8")]
        );
        assert_eq!(
            hits(&set, "10.3.0.1"),
            [pair("wide", "10.0.0.0/8"), pair("narrow", "10.0.0.0/8")]
        );
        assert_eq!(
            hits(&set, "::ffff:192.0.2.77"),
            [pair("wide", "192.0.2.0/24")]
        );
        assert_eq!(hits(&set, "2001:db8::1"), [pair("wide", "2001:db8::/32")]);
        assert!(hits(&set, "11.0.0.0").is_empty());
        assert!(hits(&set, "9.255.255.255").is_empty());
        assert!(hits(&set, "192.0.3.0").is_empty());
    }

    #[test]
    fn hashes_match_in_every_feed_listing_them() {
        let a = Sha256::from_bytes([1; 32]);
        let b = Sha256::from_bytes([2; 32]);
        let feed = |name: &str, list: Vec<Sha256>| {
            Arc::new(Loaded {
                name: name.into(),
                entries: Entries::Sha256(list),
            })
        };
        let set = FeedSet::build(&[feed("one", vec![a, b, a]), feed("two", vec![b])]);
        assert_eq!(set.match_sha256(&a).len(), 1);
        let names: Vec<String> = set.match_sha256(&b).into_iter().map(|h| h.feed).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(set.match_sha256(&Sha256::from_bytes([3; 32])).is_empty());
    }
}
