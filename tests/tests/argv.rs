//! argv is what the new image received, for every exec: read at `sched_process_exec` from the
//! new image's argument area, so no caller's page layout, no racing thread and no rewriting
//! program can make an event carry anything else — and a capture that cannot be complete
//! says so and why.

use std::{collections::BTreeMap, process::Command, time::Duration};

use osprey_tests::{
    cgroup::TestCgroup,
    collector::{is_exec_with, Collector},
    eventually, marker,
    nats::NatsServer,
    workload,
};
use protocol::{ArgvTruncation, Event, EventDetail};

struct Setup {
    collector: Collector,
    _nats: NatsServer,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let client = nats.client().await;
    let collector = Collector::start(&client, &nats.url(), &dir.path().join("spool"), &[]).await;
    Setup {
        collector,
        _nats: nats,
        dir,
    }
}

fn execs_with(c: &Collector, mark: &str) -> Vec<Event> {
    c.events(|e| is_exec_with(e, mark))
}

/// The C pattern that used to arrive with an empty argv: fork, then `execl` with a marker
/// built on the child's stack.
const FORK_EXECL: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        pid_t child = fork();
        if (child == 0) {
            char mark[160];
            snprintf(mark, sizeof mark, "%s-%d", argv[1], i);
            execl("/bin/true", "/bin/true", mark, (char *)NULL);
            _exit(127);
        }
        waitpid(child, NULL, 0);
    }
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fork_and_execl_arrives_with_its_exact_argv() {
    const N: usize = 2_000;
    let s = setup().await;
    let c = &s.collector;
    let prog = workload::compile_c(s.dir.path(), "fork_execl", FORK_EXECL);
    let cgroup = TestCgroup::create("execl");
    let mark = marker("execl");
    let status = cgroup
        .enter(Command::new(&prog).arg(&mark).arg(N.to_string()))
        .status()
        .unwrap();
    assert!(status.success());

    let prefix = format!("{mark}-");
    let settled = eventually(Duration::from_secs(30), || {
        let n = execs_with(c, &prefix).len() as u64 + c.cgroup_drops(cgroup.id(), "exec");
        (n >= N as u64).then_some(())
    })
    .await;
    assert!(settled.is_some(), "not every exec arrived or was counted");
    let drops = c.cgroup_drops(cgroup.id(), "exec");
    assert_eq!(drops, 0, "the default ring buffer keeps up with {N} execs");

    let mut seen = BTreeMap::new();
    for e in execs_with(c, &prefix) {
        let arg = e.process.argv.get(1).cloned().unwrap_or_default();
        let i: usize = arg
            .strip_prefix(&prefix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected argv {:?}", e.process.argv));
        assert_eq!(
            e.process.argv,
            ["/bin/true".to_string(), format!("{prefix}{i}")],
            "exec {i}"
        );
        assert!(!e.process.argv_truncated, "exec {i}");
        seen.insert(i, ());
    }
    assert_eq!(
        seen.len(),
        N,
        "every exec exactly once, each with its own argv"
    );
}

/// One thread flips the first byte of the argument string while another calls execve with
/// it: whatever the kernel copied is what `echo` prints, and the event must say the same.
const RACE: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static char arg[200];
static void *flip(void *unused) {
    for (unsigned long i = 0;; i++) arg[0] = (i & 1) ? 'A' : 'B';
    return unused;
}
int main(int argc, char **argv) {
    snprintf(arg, sizeof arg, "A-%s", argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, flip, NULL);
    usleep(500);
    char *args[] = {"/bin/echo", arg, NULL};
    execv("/bin/echo", args);
    return 1;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_rewriting_argv_during_execve_cannot_change_what_is_reported() {
    const RUNS: usize = 100;
    let s = setup().await;
    let c = &s.collector;
    let dir = s.dir.path();
    let racer = dir.join("race");
    let src = dir.join("race.c");
    std::fs::write(&src, RACE).unwrap();
    let ok = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&racer)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());

    let mut received = Vec::new();
    for i in 0..RUNS {
        let mark = marker(&format!("race{i}"));
        let out = Command::new(&racer).arg(&mark).output().unwrap();
        assert!(out.status.success());
        let printed = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        assert!(printed.ends_with(&mark), "{printed}");
        received.push((mark, printed));
    }
    let mut first_bytes = std::collections::BTreeSet::new();
    for (mark, printed) in &received {
        let exec = c
            .wait_event("echo exec", |e| {
                is_exec_with(e, mark) && e.process.exe.ends_with("/echo")
            })
            .await;
        assert_eq!(
            exec.process.argv,
            ["/bin/echo".to_string(), printed.clone()],
            "the event carries what the new image received"
        );
        first_bytes.insert(printed.as_bytes()[0]);
    }
    eprintln!(
        "race: {RUNS} execs, first bytes seen by the new images: {:?}",
        first_bytes.iter().map(|&b| b as char).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argv_longer_than_the_capture_is_cut_and_says_why() {
    let s = setup().await;
    let c = &s.collector;
    let mark = marker("long");
    let long = "x".repeat(6000);
    let status = Command::new("/bin/true")
        .arg(&mark)
        .arg(&long)
        .arg("after")
        .status()
        .unwrap();
    assert!(status.success());
    let exec = c.wait_event("long exec", |e| is_exec_with(e, &mark)).await;
    assert!(exec.process.argv_truncated);
    assert_eq!(exec.process.argv_truncation, Some(ArgvTruncation::TooLong));
    assert_eq!(
        exec.process.argv[..2],
        ["/bin/true".to_string(), mark.clone()]
    );
    // NUL-separated as the kernel holds them; the cut last string has no NUL of its own.
    let kept = exec.process.argv.join("\0").len();
    assert!(
        (4000..=4096).contains(&kept),
        "the first 4 KiB are kept ({kept} bytes)"
    );
    assert!(exec.process.argv[2].chars().all(|ch| ch == 'x'));

    // And a complete one says it is complete.
    let mark = marker("short");
    Command::new("/bin/true").arg(&mark).status().unwrap();
    let exec = c.wait_event("short exec", |e| is_exec_with(e, &mark)).await;
    assert!(!exec.process.argv_truncated);
    assert_eq!(exec.process.argv_truncation, None);
}

/// A process that predates the collector, with megabytes of arguments, is read from /proc
/// bounded like the kernel's capture: its child's findings carry it as an ancestor and still
/// fit in a NATS message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_inherited_argv_never_makes_a_finding_too_big_to_publish() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mark = marker("huge");
    // 12 arguments of 100 KiB: 1.2 MB of command line, more than a NATS message holds.
    let filler: Vec<String> = (0..12)
        .map(|i| format!("{i}{}", "y".repeat(100 * 1024)))
        .collect();
    let mut parent = Command::new(workload::PYTHON)
        .arg("-c")
        .arg(format!(
            "# {mark}\nimport sys, subprocess\nsys.stdin.readline()\n\
             subprocess.run([sys.executable, '-c', '# {mark}-child\\nimport socket\\n\
             socket.create_connection((\"127.0.0.1\", {port})).close()'])\n"
        ))
        .args(&filler)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let s = {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start();
        let client = nats.client().await;
        let collector = Collector::start(
            &client,
            &nats.url(),
            &dir.path().join("spool"),
            &["--local-networks", "169.254.0.0/16"],
        )
        .await;
        Setup {
            collector,
            _nats: nats,
            dir,
        }
    };
    {
        use std::io::Write;
        parent.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    workload::finish(parent, "huge parent");
    let child_mark = format!("{mark}-child");
    let finding = s
        .collector
        .wait_finding("child connect", |f| {
            f.process.argv.iter().any(|a| a.contains(&child_mark))
                && matches!(
                    f.triggers.first().map(|t| &t.detail),
                    Some(EventDetail::Connect(_))
                )
        })
        .await;
    let parent_argv = &finding
        .ancestry
        .first()
        .expect("the parent is in the ancestry")
        .argv;
    let bytes = parent_argv.join("\0").len();
    assert!(
        bytes <= 4096,
        "the inherited argv is bounded ({bytes} bytes)"
    );
    assert!(parent_argv.iter().any(|a| a.contains(&mark)));
    drop(listener);
}
