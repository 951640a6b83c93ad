//! Whole Linux Sigma corpus + example policy against a mix of recorded-style events.
//! Throughput is per event: criterion's "time" divided by the mix size is ns/event, and the
//! ns/event line printed before the run says it directly.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{hint::black_box, time::Instant};

use common::{connect, exec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::{
    Event,
    TransportProtocol::{Tcp, Udp},
};
use rules::{Engine, MatchInput, Platform};

fn events() -> Vec<Event> {
    let long_java = format!(
        "-Xmx2g -cp {} com.example.Main --spring.profiles.active=prod",
        (0..40)
            .map(|i| format!("/opt/app/lib/dep-{i}.jar"))
            .collect::<Vec<_>>()
            .join(":")
    );
    let mut java_argv = vec!["java"];
    java_argv.extend(long_java.split(' '));
    vec![
        exec(&["ls", "-la", "/home/alice"], "/usr/bin/ls", None),
        exec(&["git", "status", "--porcelain"], "/usr/bin/git", None),
        exec(
            &["cargo", "build", "--release"],
            "/home/alice/.cargo/bin/cargo",
            None,
        ),
        exec(
            &java_argv,
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            Some("/usr/bin/java"),
        ),
        exec(
            &["/usr/bin/python3", "/usr/bin/unattended-upgrade"],
            "/usr/bin/python3.11",
            Some("/usr/bin/python3"),
        ),
        exec(
            &[
                "/bin/sh",
                "-c",
                "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
            ],
            "/usr/bin/dash",
            Some("/bin/sh"),
        ),
        exec(&["apt-get", "update", "-qq"], "/usr/bin/apt-get", None),
        exec(
            &[
                "gcc",
                "-O2",
                "-Wall",
                "-c",
                "src/main.c",
                "-o",
                "build/main.o",
            ],
            "/usr/bin/x86_64-linux-gnu-gcc-12",
            Some("/usr/bin/gcc"),
        ),
        exec(
            &["node", "/srv/app/server.js", "--port", "8080"],
            "/usr/bin/node",
            None,
        ),
        exec(
            &["systemctl", "status", "nginx"],
            "/usr/bin/systemctl",
            None,
        ),
        exec(&["grep", "-rn", "TODO", "src/"], "/usr/bin/grep", None),
        exec(
            &["sed", "-i", "s/foo/bar/g", "config.ini"],
            "/usr/bin/sed",
            None,
        ),
        exec(
            &["tar", "xzf", "release-1.2.3.tar.gz", "-C", "/opt/app"],
            "/usr/bin/tar",
            None,
        ),
        exec(&["nginx", "-g", "daemon off;"], "/usr/sbin/nginx", None),
        exec(&["sshd", "-D"], "/usr/sbin/sshd", None),
        exec(&["whoami"], "/usr/bin/whoami", None),
        exec(&["cat", "/etc/passwd"], "/usr/bin/cat", None),
        exec(
            &["curl", "-fsSL", "https://example.com/install.sh"],
            "/usr/bin/curl",
            None,
        ),
        exec(&["virus"], "/tmp/virus", None),
        exec(
            &["sh", "-c", "echo aGkK | base64 -d | bash"],
            "/usr/bin/dash",
            Some("/bin/sh"),
        ),
        connect(
            &["curl", "https://example.com"],
            "/usr/bin/curl",
            "93.184.216.34",
            443,
            Tcp,
        ),
        connect(
            &["systemd-resolved"],
            "/usr/lib/systemd/systemd-resolved",
            "1.1.1.1",
            53,
            Udp,
        ),
        connect(
            &["python3", "app.py"],
            "/usr/bin/python3.11",
            "10.0.0.5",
            5432,
            Tcp,
        ),
        connect(
            &["nc", "198.51.100.1", "4444"],
            "/usr/bin/nc.openbsd",
            "198.51.100.1",
            4444,
            Tcp,
        ),
        connect(&["bash"], "/usr/bin/bash", "2001:db8::1", 80, Tcp),
    ]
}

fn bench(c: &mut Criterion) {
    let engine = Engine::load(&[common::sigma_corpus(), common::example_policy()])
        .unwrap_or_else(|e| panic!("{e}"));
    let events = events();
    let inputs: Vec<MatchInput<'_>> = events
        .iter()
        .map(|e| MatchInput::from_event(e).with_platform(Platform::Linux))
        .collect();
    let hits: usize = inputs.iter().map(|i| engine.evaluate(i).len()).sum();

    // A plain measurement, so the number is in the output whatever criterion prints.
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for input in &inputs {
            black_box(engine.evaluate(black_box(input)));
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * inputs.len()) as f64;
    println!(
        "{} rules, {} events in the mix ({} matches): {ns:.0} ns/event",
        engine.report().evaluating(),
        inputs.len(),
        hits
    );

    if std::env::var_os("OSPREY_BENCH_PER_EVENT").is_some() {
        for (event, input) in events.iter().zip(&inputs) {
            let start = Instant::now();
            for _ in 0..rounds {
                black_box(engine.evaluate(black_box(input)));
            }
            let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
            let line = event.process.argv.join(" ");
            println!(
                "{ns:>7.0} ns  {:?} {}",
                event.kind(),
                &line[..line.len().min(70)]
            );
        }
    }

    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("corpus+policy/mixed-events", |b| {
        b.iter(|| {
            for input in &inputs {
                black_box(engine.evaluate(black_box(input)));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("corpus+policy", |b| {
        b.iter(|| Engine::load(&[common::sigma_corpus(), common::example_policy()]))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
