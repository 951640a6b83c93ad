//! What the history costs: the in-memory baseline check on the collector's event path
//! (ns/call), a whole `History::connection` call, and the writer thread's throughput
//! (rows/s into a real SQLite file). `cargo bench -p osprey-history --no-default-features`.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use history::{
    baseline::Baseline,
    config::BaselineConfig,
    identity::{Identity, Program},
    store::record::ConnectionRow,
    History, HistoryConfig, Record,
};
use protocol::{
    ConnectEvent, ConnectHook, ExecId, Outcome, Process, SocketFamily, Timestamp, TransportProtocol,
};

const HOUR: i64 = 3_600_000_000_000;

fn exec(pid: u32) -> ExecId {
    format!("4cd11df2-{pid}-{pid}-0").parse().unwrap()
}

fn baseline_check(c: &mut Criterion) {
    let config = BaselineConfig::default();
    let mut baseline = Baseline::new(&config);
    let identity = Identity {
        program: Program::from("/usr/bin/python3 /opt/app/server.py"),
        user: "www-data".into(),
    };
    let t0 = Timestamp::now().unix_nanos();
    let destinations: Vec<_> = (0..64u32)
        .map(|i| {
            baseline.destination_of(
                TransportProtocol::Tcp,
                [10, 0, (i % 8) as u8, i as u8].into(),
                443 + (i % 4) as u16,
            )
        })
        .collect();
    for d in &destinations {
        baseline.destination(&identity, d, exec(1), t0);
    }
    let later = t0 + 48 * HOUR;
    let mut i = 0;
    c.bench_function("baseline: known destination", |b| {
        b.iter(|| {
            i = (i + 1) % destinations.len();
            black_box(baseline.destination(&identity, &destinations[i], exec(2), later))
        })
    });
    let novel = baseline.destination_of(TransportProtocol::Tcp, [192, 0, 2, 1].into(), 4444);
    baseline.destination(&identity, &novel, exec(2), later);
    c.bench_function("baseline: novel destination, already reported", |b| {
        b.iter(|| black_box(baseline.destination(&identity, &novel, exec(2), later)))
    });
}

fn connect(ip: [u8; 4], port: u16, protocol: TransportProtocol) -> ConnectEvent {
    ConnectEvent {
        family: SocketFamily::Ipv4,
        protocol,
        destination_ip: ip.into(),
        destination_port: port,
        source_ip: None,
        source_port: None,
        outcome: Outcome::Ok,
        errno: None,
        hook: ConnectHook::Connect,
        late_outcome: false,
    }
}

fn history_calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HistoryConfig {
        path: dir.path().join("history.db"),
        ..HistoryConfig::default()
    };
    config.baseline.learning_period_hours = 1.0;
    let mut history = History::open(&config, "bench", &["python*".to_string()]).unwrap();
    let t0 = Timestamp::now().unix_nanos() - 10 * HOUR;
    let p = Process {
        start_time: Timestamp::from_unix_nanos(t0),
        user: Some("www-data".into()),
        ..Process::new(
            exec(10),
            "/usr/bin/python3",
            vec!["python3".into(), "/opt/app/server.py".into()],
        )
    };
    history.process_exec(&p, None, Timestamp::from_unix_nanos(t0));
    let dns = connect([10, 0, 0, 53], 53, TransportProtocol::Udp);
    let web = connect([10, 0, 0, 80], 443, TransportProtocol::Tcp);
    history.connection(&p, Timestamp::from_unix_nanos(t0), &dns);
    history.connection(&p, Timestamp::from_unix_nanos(t0), &web);
    let now = Timestamp::from_unix_nanos(t0 + 2 * HOUR);
    c.bench_function("History::connection, UDP datagram to a known flow", |b| {
        b.iter(|| black_box(history.connection(&p, now, &dns)))
    });
    c.bench_function(
        "History::connection, TCP connect (row queued, open map)",
        |b| b.iter(|| black_box(history.connection(&p, now, &web))),
    );
    eprintln!(
        "history stats after the call benches: {:?}",
        history.stats().store
    );
    history.close().unwrap();
}

fn row(i: u64, t: i64) -> Record {
    Record::Close(ConnectionRow {
        exec_id: exec(i as u32),
        exe: "/usr/bin/curl".into(),
        protocol: "tcp",
        destination: "10.1.2.3".parse().unwrap(),
        port: 443,
        source_port: Some(40_000),
        outcome: "ok",
        start: Timestamp::from_unix_nanos(t + i as i64),
        end: Some(Timestamp::from_unix_nanos(t + i as i64 + 1_000_000_000)),
        bytes_sent: Some(1_234),
        bytes_received: Some(5_678),
        score: Some(0.4),
        label: Some(history::score::Label::Normal),
        features: Some([0.5; history::score::FEATURE_COUNT]),
    })
}

fn writer_throughput(c: &mut Criterion) {
    const ROWS: u64 = 20_000;
    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for kind in ["connection rows (insert)", "process rows (upsert)"] {
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig {
            path: dir.path().join("history.db"),
            queue_capacity: ROWS as usize,
            ..HistoryConfig::default()
        };
        let history = History::open(&config, "bench", &[]).unwrap();
        let handle = history.handle();
        let t = Timestamp::now().unix_nanos();
        let mut next = 0u64;
        group.bench_function(BenchmarkId::new("rows/s", kind), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for _ in 0..ROWS {
                        next += 1;
                        let record = if kind.starts_with("process") {
                            Record::Process(history::store::record::ProcessRow::of(&Process::new(
                                exec(next as u32),
                                "/usr/bin/true",
                                vec!["true".into(), next.to_string()],
                            )))
                        } else {
                            row(next, t)
                        };
                        assert!(handle.record(record), "the queue holds a whole round");
                    }
                    handle.flush().unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
        drop(handle);
        history.close().unwrap();
    }
    group.finish();
}

criterion_group!(benches, baseline_check, history_calls, writer_throughput);
criterion_main!(benches);
