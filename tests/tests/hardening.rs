//! Actions that cannot be turned against the host: every dangerous command is refused and
//! audited with a reason that names the danger; files are acted on by identity, never by a
//! path a local user can redirect; processes are suspended so their user cannot resume them,
//! killed with their whole tree, and a long dump never holds up a kill. And floods leave
//! nothing behind in the collector.

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Command as Proc, Stdio},
    time::{Duration, Instant},
};

use osprey_tests::{actuation::*, eventually, workload};
use protocol::{Action, CommandStatus, Decision, ExecId};

fn refused_with(r: &protocol::CommandResult, needle: &str) {
    assert_eq!(r.status, CommandStatus::Refused, "{r:?}");
    assert!(
        r.reason.contains(needle),
        "reason {:?} lacks {needle:?}",
        r.reason
    );
}

/// The first nameserver of this machine's resolv.conf.
fn system_resolver() -> Option<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dangerous_command_is_refused_and_audited_with_its_reason() {
    let env = Env::new("matrix").await;
    let stub = env.path("resolv.conf");
    std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
    let collector = env
        .collector(
            &format!("  resolver_files: [/etc/resolv.conf, {}]\n", stub.display()),
            None,
        )
        .await;
    let host = collector.host.clone();
    let nats_port: u16 = env.nats.url().rsplit(':').next().unwrap().parse().unwrap();
    let block = |cidr: &str, port: Option<u16>| Action::Block {
        cidr: cidr.into(),
        port,
        ttl_secs: Some(60),
    };
    // kthreadd: a real, live pid with a real start time that the process table never holds
    // (kernel threads are not processes it tracks).
    let unknown = exec_id_of(2);
    let mut rows: Vec<(&str, Action, String)> = vec![
        (
            "block of an IPv4-mapped resolver address",
            block("::ffff:127.0.0.53", None),
            "the resolver 127.0.0.53".into(),
        ),
        (
            "block of the NATS server",
            block("127.0.0.1", Some(nats_port)),
            format!("protected destination 127.0.0.1:{nats_port}"),
        ),
        (
            "block of everything",
            block("0.0.0.0/0", None),
            "covers every address".into(),
        ),
        (
            "block of a /8",
            block("10.0.0.0/8", None),
            "wider than the widest block allowed".into(),
        ),
        (
            "kill-on-exec of bash",
            Action::KillOnExec {
                path: Some("/usr/bin/bash".into()),
                target: None,
                ttl_secs: None,
            },
            "interpreter or shell".into(),
        ),
        (
            "kill of a pid the table does not know",
            Action::Kill {
                target: unknown,
                tree: false,
            },
            "not in this host's process table".into(),
        ),
    ];
    if let Some(resolver) = system_resolver() {
        rows.push((
            "block of the system resolver",
            block(&resolver, Some(53)),
            format!("the resolver {resolver}"),
        ));
    }
    for (what, action, needle) in rows {
        let command = env.signed(&host, action);
        let r = env.send(&host, &command).await;
        refused_with(&r, &needle);
        let audited = wait_audit(&env.actuator_audit(), what, |a| {
            a.command_id.as_deref() == Some(command.id.as_str())
        })
        .await;
        assert_eq!(audited.decision, Decision::Refused, "{what}");
        assert!(
            audited.reason.contains(&needle),
            "{what}: {}",
            audited.reason
        );
        eprintln!("refused as it must: {what}: {}", r.reason);
    }
}

/// A copy of `from` at `to`, executable.
fn install(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_acts_on_the_verified_file_and_nothing_else() {
    let env = Env::new("quar").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let victim = env.path("system/victim");
    install("/bin/true", &victim);
    let victim_bytes = std::fs::read(&victim).unwrap();
    let quarantine_path = |p: &Path| Action::Quarantine {
        target: None,
        path: Some(p.display().to_string()),
    };

    // A symbolic link where the file was.
    let link = env.path("links/evil");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let r = env
        .send(&host, &env.signed(&host, quarantine_path(&link)))
        .await;
    refused_with(&r, "is a symbolic link");

    // A directory on the way swapped for a link to another directory.
    let swapped = env.path("swapped");
    std::os::unix::fs::symlink(victim.parent().unwrap(), &swapped).unwrap();
    let r = env
        .send(
            &host,
            &env.signed(&host, quarantine_path(&swapped.join("victim"))),
        )
        .await;
    refused_with(&r, "directory on the way");

    // A process whose executable has another hard link.
    let linked = env.path("hl/evil");
    install("/bin/sleep", &linked);
    std::fs::hard_link(&linked, env.path("hl/evil2")).unwrap();
    let mut child = env.spawn(linked.to_str().unwrap(), &["600"]);
    let target = running_image(&collector, child.id(), "/hl/evil").await;
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Quarantine {
                    target: Some(target),
                    path: None,
                },
            ),
        )
        .await;
    refused_with(&r, "hard link");
    assert_eq!(mode(&linked), 0o755);
    assert!(env.path("hl/evil2").exists());
    let _ = child.kill();
    let _ = child.wait();

    // A running binary renamed away and its name given to a link to the victim: the
    // running file is what is quarantined, found through the process, not the name.
    let moved = env.path("mv/evil");
    install("/bin/sleep", &moved);
    let mut child = env.spawn(moved.to_str().unwrap(), &["600"]);
    let target = running_image(&collector, child.id(), "/mv/evil").await;
    std::fs::rename(&moved, env.path("mv/evil.moved")).unwrap();
    std::os::unix::fs::symlink(&victim, &moved).unwrap();
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Quarantine {
                    target: Some(target),
                    path: None,
                },
            ),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert!(r.reason.contains("mv/evil.moved"), "{}", r.reason);
    assert!(
        !env.path("mv/evil.moved").exists(),
        "the running file moved"
    );
    assert!(
        std::fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is untouched"
    );
    let audited = wait_audit(&env.actuator_audit(), "the quarantine", |a| {
        a.action == "quarantine" && a.decision == Decision::Executed
    })
    .await;
    let stored = audited
        .quarantine_path
        .expect("the audit names where it went");
    assert_eq!(mode(Path::new(&stored)), 0);
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(mode(&victim), 0o755, "the victim keeps its mode");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        victim_bytes,
        "and its place"
    );
}

/// The `ExecId` of `pid` once the collector saw it exec a file whose path ends with `exe`.
async fn running_image(c: &osprey_tests::collector::Collector, pid: u32, exe: &str) -> ExecId {
    c.wait_event(exe, |e| {
        e.process.pid == pid
            && e.process.exe.ends_with(exe)
            && matches!(e.detail, protocol::EventDetail::Exec(_))
    })
    .await
    .process
    .exec_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_process_is_acted_on_in_its_own_mount_namespace() {
    let env = Env::new("ns").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    // The host has a file at the path; the "container" mounts its own filesystem over the
    // directory and runs a different file from the same path.
    let dir = env.path("ns");
    let path = dir.join("evil");
    install("/bin/true", &path);
    let host_bytes = std::fs::read(&path).unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs {d} && cp /bin/sleep {p} && exec {p} 600",
        d = dir.display(),
        p = path.display()
    );
    let mut child = env.spawn(
        "/usr/bin/unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    let target = running_image(&collector, child.id(), "/ns/evil").await;
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Quarantine {
                    target: Some(target),
                    path: None,
                },
            ),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert!(r.reason.contains("mount namespace"), "{}", r.reason);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        host_bytes,
        "the host's file at the same path is untouched"
    );
    assert_eq!(mode(&path), 0o755);
    let stored = r.output.expect("where the container's file went");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read("/bin/sleep").unwrap(),
        "the container's file is the one quarantined"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `program args` in the test's cgroup as user nobody.
fn spawn_as_nobody(env: &Env, program: &str, args: &[&str]) -> std::process::Child {
    let procs = env.cgroup.path.join("cgroup.procs");
    let mut cmd = Proc::new(program);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: only a file write and set[gu]id between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            std::fs::write(&procs, b"0")?;
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn as nobody")
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_kill_leaves_no_descendant_and_a_frozen_process_ignores_its_users_sigcont() {
    let env = Env::new("tree").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();

    // Three children with a grandchild each, and a daemon that double-forked away (its
    // parent is init now): every pid is printed, then the tree waits.
    let script = "import os, time\n\
        def hold():\n    os.write(1, b'%d\\n' % os.getpid())\n    time.sleep(600)\n    os._exit(0)\n\
        for _ in range(3):\n    if os.fork() == 0:\n        if os.fork() == 0:\n            hold()\n        hold()\n\
        if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        hold()\n    os._exit(0)\n\
        time.sleep(600)\n";
    let mut root = env.spawn(workload::PYTHON, &["-c", script]);
    let mut lines = BufReader::new(root.stdout.take().unwrap()).lines();
    let mut members: Vec<u32> = (0..7)
        .map(|_| lines.next().unwrap().unwrap().trim().parse().unwrap())
        .collect();
    members.push(root.id());
    let target = live_exec_id(&collector, root.id()).await;
    let r = env
        .send(
            &host,
            &env.signed(&host, Action::Kill { target, tree: true }),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    let _ = root.wait();
    let alive = |pid: &u32| !matches!(state_of(*pid), None | Some('Z'));
    let gone = eventually(Duration::from_secs(10), || {
        (!members.iter().any(alive)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "alive after the tree kill: {:?} ({})",
        members.iter().filter(|p| alive(p)).collect::<Vec<_>>(),
        r.reason
    );
    eprintln!("tree kill: {}", r.reason);

    // A process of user nobody that ticks into a file; suspended, it must stay still after
    // its own user sends SIGCONT.
    let ticks = env.path("ticks");
    std::fs::write(&ticks, b"").unwrap();
    std::fs::set_permissions(&ticks, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ticker = format!(
        "import time\nwhile True:\n    open('{}', 'a').write('.')\n    time.sleep(0.05)\n",
        ticks.display()
    );
    let mut child = spawn_as_nobody(&env, workload::PYTHON, &["-c", &ticker]);
    let pid = child.id();
    let target = live_exec_id(&collector, pid).await;
    let size = || std::fs::metadata(&ticks).unwrap().len();
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Suspend {
                    target,
                    ttl_secs: None,
                },
            ),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert!(r.reason.contains("frozen"), "{}", r.reason);
    assert_eq!(state_of(pid), Some('T'), "stopped");
    let before = size();
    let cont = Proc::new("/bin/kill")
        .args(["-CONT", &pid.to_string()])
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(cont.success(), "its user may send the signal");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        size(),
        before,
        "frozen: its user's SIGCONT does not resume it"
    );

    let r = env
        .send(&host, &env.signed(&host, Action::Resume { target }))
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    let resumed = eventually(Duration::from_secs(5), || (size() > before).then_some(())).await;
    assert!(resumed.is_some(), "resumed by the actuator");
    for action in ["suspend", "resume"] {
        wait_audit(&env.actuator_audit(), action, |a| {
            a.action == action && a.decision == Decision::Executed
        })
        .await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Peak resident memory of `pid` (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_is_answered_while_a_large_dump_runs_and_the_dump_streams() {
    let env = Env::new("dump").await;
    let collector = env.collector("  dump_max_bytes: 4294967296\n", None).await;
    let host = collector.host.clone();
    // 1 GiB of written (resident) memory.
    let mut big = env.spawn(
        workload::PYTHON,
        &[
            "-c",
            "import sys, time\nb = bytearray(b'o') * (1 << 30)\nprint('ready', flush=True)\ntime.sleep(600)\n",
        ],
    );
    let mut ready = String::new();
    BufReader::new(big.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let big_id = live_exec_id(&collector, big.id()).await;
    let mut victim = env.spawn("/bin/sleep", &["600"]);
    let victim_id = live_exec_id(&collector, victim.id()).await;
    let rss_before = peak_rss(collector.pid());

    let started = Instant::now();
    let dump = env.signed(&host, Action::Dump { target: big_id });
    let payload = protocol::encode(&dump).unwrap();
    let client = env.client.clone();
    let subject = protocol::subject::command(&host);
    let dump_reply = tokio::spawn(async move {
        let reply = tokio::time::timeout(
            Duration::from_secs(300),
            client.request(subject, payload.into()),
        )
        .await
        .expect("the dump answers")
        .expect("request");
        let result: protocol::CommandResult = protocol::decode(&reply.payload).unwrap();
        (result, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill_sent = Instant::now();
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Kill {
                    target: victim_id,
                    tree: false,
                },
            ),
        )
        .await;
    let kill_answered = Instant::now();
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert!(wait_exit(&mut victim, Duration::from_secs(5))
        .await
        .is_some());
    let (dumped, dump_answered) = dump_reply.await.unwrap();
    assert_eq!(dumped.status, CommandStatus::Ok, "{dumped:?}");
    assert!(
        kill_answered < dump_answered,
        "the kill was answered while the dump still ran"
    );
    let growth = peak_rss(collector.pid()).saturating_sub(rss_before);
    eprintln!(
        "dump of 1 GiB: {} in {:?}; kill answered after {:?} while it ran; collector peak RSS grew by {} MiB",
        dumped.reason,
        dump_answered - started,
        kill_answered - kill_sent,
        growth >> 20
    );
    assert!(dumped.reason.contains("dumped"), "{}", dumped.reason);
    assert!(
        growth < 256 << 20,
        "the dump streams: peak RSS grew by {} MiB for a 1 GiB dump",
        growth >> 20
    );
    let _ = big.kill();
    let _ = big.wait();
    if let Some(dir) = dumped.output {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_nothing_pending() {
    let env = Env::new("flood").await;
    let collector = env.collector("", None).await;
    let flood = workload::compile_c(env.dir.path(), "sendmmsg_flood", workload::SENDMMSG_FLOOD);
    let storm = workload::compile_c(env.dir.path(), "fork_storm", workload::FORK_STORM);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let status = env
        .cgroup
        .enter(Proc::new(&flood).args(["50000", &port]))
        .status()
        .unwrap();
    assert!(status.success(), "50,000 datagrams sent");
    let status = env
        .cgroup
        .enter(Proc::new(&storm).arg("10000"))
        .status()
        .unwrap();
    assert!(status.success(), "10,000 processes forked");

    // Every attempt was handled by the collector (events on the bus may be shed by a slow
    // subscriber; the collector's own count is what matters here).
    let connect_count = |c: &osprey_tests::collector::Collector| {
        c.last_heartbeat()
            .and_then(|h| h.events.get("connect").copied())
            .unwrap_or(0)
    };
    let handled = eventually(Duration::from_secs(60), || {
        (connect_count(&collector) >= 50_000).then_some(())
    })
    .await;
    assert!(
        handled.is_some(),
        "the collector handled {} connects",
        connect_count(&collector)
    );
    let received = collector.events(|e| {
        matches!(&e.detail, protocol::EventDetail::Connect(c)
            if c.destination_port.to_string() == port)
    });
    assert!(
        received.iter().all(|e| matches!(&e.detail,
            protocol::EventDetail::Connect(c) if c.outcome == protocol::Outcome::Ok)),
        "each attempt got the outcome of its sendmmsg"
    );
    let drained = eventually(Duration::from_secs(30), || {
        collector.last_heartbeat().filter(|h| {
            h.pending.get("connects") == Some(&0) && h.pending.get("parked_events") == Some(&0)
        })
    })
    .await;
    let last = collector.last_heartbeat().unwrap();
    assert!(
        drained.is_some(),
        "nothing left pending: {:?}",
        last.pending
    );
    let peak = peak_rss(collector.pid());
    eprintln!(
        "floods: 50,000 sendmmsg destinations + 10,000 forks; {} connect events received here; \
         collector peak RSS {} MiB; pending {:?}; evicted {:?}; table {} entries, {} evicted; \
         drops {:?}",
        received.len(),
        peak >> 20,
        last.pending,
        last.evicted,
        last.process_table_size,
        last.process_table_evicted,
        last.drops
    );
    // The debug build's memory is not the product's: `cargo xtask bench` measures the
    // release collector under the same floods.
}
