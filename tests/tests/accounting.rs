//! Exact accounting: every exec is either reported or counted as dropped. The storm runs in
//! a cgroup of its own and the kernel counts drops per cgroup, so the equality holds for the
//! test's own processes whatever else runs on the machine.

use std::time::Duration;

use osprey_tests::{cgroup::TestCgroup, collector::Collector, marker, nats::NatsServer};

const STORM: usize = 2_000;

/// Runs `/bin/true <marker>-<i>` STORM times, two at a time, inside `cgroup`.
fn exec_storm(mark: &str, cgroup: &TestCgroup) {
    let mut running = Vec::new();
    for i in 0..STORM {
        running.push(
            cgroup
                .enter(std::process::Command::new("/bin/true").arg(format!("{mark}-{i}")))
                .spawn()
                .unwrap(),
        );
        if running.len() >= 2 {
            running.remove(0).wait().unwrap();
        }
    }
    for mut c in running {
        c.wait().unwrap();
    }
}

fn reported(c: &Collector, mark: &str) -> usize {
    c.events(|e| {
        matches!(e.detail, protocol::EventDetail::Exec(_))
            && e.process.argv.get(1).is_some_and(|a| a.starts_with(mark))
    })
    .len()
}

/// Waits until the reported count and the cgroup's drop counter stop moving.
async fn settle(c: &Collector, mark: &str, cgroup: &TestCgroup) -> (usize, u64) {
    let mut last = (usize::MAX, u64::MAX);
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = (reported(c, mark), c.cgroup_drops(cgroup.id(), "exec"));
        if now == last {
            return now;
        }
        last = now;
    }
}

struct Setup {
    collector: Collector,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let client = nats.client().await;
    let collector = Collector::start(&client, &nats.url(), &dir.path().join("spool"), extra).await;
    Setup {
        collector,
        _nats: nats,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_ring_buffer_counts_every_lost_exec() {
    // One 64 KiB ring (about 25 exec records) and a stalled reader.
    let s = setup(&["--ring-buffer-bytes", "65536"]).await;
    let c = &s.collector;
    let cgroup = TestCgroup::create("overflow");
    let mark = marker("overflow");
    c.signal(libc::SIGSTOP);
    exec_storm(&mark, &cgroup);
    c.signal(libc::SIGCONT);
    let (events, drops) = settle(c, &mark, &cgroup).await;
    eprintln!("overflow: {events} exec events reported + {drops} dropped of {STORM}");
    assert!(drops > 0, "the storm must overflow the ring buffer");
    assert_eq!(
        events as u64 + drops,
        STORM as u64,
        "reported + dropped = generated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_normal_ring_buffer_every_exec_arrives() {
    let s = setup(&[]).await;
    let c = &s.collector;
    let cgroup = TestCgroup::create("storm");
    let mark = marker("storm");
    exec_storm(&mark, &cgroup);
    let (events, drops) = settle(c, &mark, &cgroup).await;
    eprintln!("storm: {events} of {STORM} exec events reported, {drops} dropped");
    assert_eq!(events, STORM);
    assert_eq!(drops, 0);
}
