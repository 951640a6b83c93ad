//! What a spooled finding costs the pipeline: `Spool::append` (write to a temporary file and
//! rename it into place) and, once acknowledged, `Spool::remove` — with and without
//! `spool.fsync` (sync the file and the directory). Run on the disk the spool lives on:
//! `OSPREY_SPOOL_BENCH_DIR=/var/lib/osprey cargo bench -p osprey-collector --bench spool`
//! (default: the system temporary directory).

use std::{hint::black_box, path::PathBuf};

use collector::publish::spool::{Spool, SpoolConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::Severity;

/// About the size of an encoded finding with a process, its ancestry and one trigger.
const FINDING_BYTES: usize = 2048;

fn base_dir() -> PathBuf {
    std::env::var_os("OSPREY_SPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn append_and_remove(c: &mut Criterion) {
    let payload = vec![0x5a_u8; FINDING_BYTES];
    let mut group = c.benchmark_group("spool");
    group.throughput(Throughput::Elements(1));
    for fsync in [false, true] {
        let dir = tempfile::tempdir_in(base_dir()).expect("a directory for the spool");
        let mut spool = Spool::open(&SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
            max_findings: 100_000,
            fsync,
        })
        .expect("open the spool");
        let name = if fsync {
            "append+remove, fsync"
        } else {
            "append+remove"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let seq = spool.append(Severity::High, black_box(&payload));
                spool.remove(seq)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_and_remove);
criterion_main!(benches);
