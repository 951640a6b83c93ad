//! What intel costs where it is called: a feed lookup on the collector's event path (100,000
//! entries per feed) and a verdict cache hit on the intel thread.
//!
//! `cargo bench -p osprey-intel`

use std::{hint::black_box, net::IpAddr, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use intel::{FeedConfig, FeedKind, Feeds, Sha256, Verdict, VerdictCache, VerdictSource};

const ENTRIES: usize = 100_000;

/// xorshift64*: the same "random" entries every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn feed(dir: &std::path::Path, name: &str, kind: FeedKind, lines: &[String]) -> FeedConfig {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    FeedConfig {
        name: name.into(),
        path: Some(path),
        url: None,
        kind,
        column: None,
        refresh: Some(Duration::from_secs(3600)),
    }
}

fn feeds(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Mostly single addresses, some networks, as in FireHOL level 1-3 lists.
    let mut ips = Vec::with_capacity(ENTRIES);
    let mut nets = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let addr = std::net::Ipv4Addr::from(rng.next() as u32);
        let prefix = if i % 10 == 0 {
            16 + (rng.next() % 16) as u8
        } else {
            32
        };
        nets.push(format!("{addr}/{prefix}"));
        ips.push(IpAddr::V4(addr));
    }
    let hashes: Vec<Sha256> = (0..ENTRIES)
        .map(|i| Sha256::digest(format!("bad-{i}").as_bytes()))
        .collect();
    let hash_lines: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
    let feeds = Feeds::start(
        &[
            feed(dir.path(), "ips", FeedKind::Ip, &nets),
            feed(dir.path(), "hashes", FeedKind::Sha256, &hash_lines),
        ],
        dir.path(),
    )
    .unwrap();
    assert_eq!(feeds.status()[0].entries, ENTRIES);
    let misses: Vec<IpAddr> = (0..1024)
        .map(|_| IpAddr::V4(std::net::Ipv4Addr::from(rng.next() as u32)))
        .collect();

    let mut group = c.benchmark_group("feeds_100k");
    let mut i = 0usize;
    group.bench_function("match_ip_hit", |b| {
        b.iter(|| {
            i = (i + 1) % ENTRIES;
            black_box(feeds.match_ip(black_box(ips[i])))
        })
    });
    group.bench_function("match_ip_miss", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            black_box(feeds.match_ip(black_box(misses[i])))
        })
    });
    let mapped: Vec<IpAddr> = ips[..1024]
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            other => *other,
        })
        .collect();
    group.bench_function("match_ip_mapped_v6_hit", |b| {
        b.iter(|| {
            i = (i + 1) % mapped.len();
            black_box(feeds.match_ip(black_box(mapped[i])))
        })
    });
    let miss_hash = Sha256::digest(b"not listed");
    group.bench_function("match_sha256_hit", |b| {
        b.iter(|| {
            i = (i + 1) % ENTRIES;
            black_box(feeds.match_sha256(black_box(&hashes[i])))
        })
    });
    group.bench_function("match_sha256_miss", |b| {
        b.iter(|| black_box(feeds.match_sha256(black_box(&miss_hash))))
    });
    group.finish();
}

fn cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let cache = VerdictCache::open(&dir.path().join("intel.db"), 7 * day, day).unwrap();
    let now = protocol::Timestamp::now();
    let hashes: Vec<Sha256> = (0..10_000)
        .map(|i| Sha256::digest(format!("cached-{i}").as_bytes()))
        .collect();
    for h in &hashes {
        let verdict = Verdict {
            sha256: *h,
            known: true,
            malicious: 5,
            suspicious: 1,
            harmless: 0,
            undetected: 60,
            engines: 70,
            link: intel::report_link(h),
            looked_up_at: now,
            source: VerdictSource::Virustotal,
        };
        cache.put(&verdict).unwrap();
    }
    let mut group = c.benchmark_group("verdict_cache_10k");
    let mut i = 0usize;
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 1) % hashes.len();
            black_box(cache.get(black_box(&hashes[i]), now).unwrap())
        })
    });
    let miss = Sha256::digest(b"never cached");
    group.bench_function("get_miss", |b| {
        b.iter(|| black_box(cache.get(black_box(&miss), now).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, feeds, cache);
criterion_main!(benches);
