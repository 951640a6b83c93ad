//! Response end to end: the collector's actuator and the responder acting on real processes,
//! real sockets and the kernel, over a real nats-server. Connect hooks attach to a cgroup of
//! the test's own, and the test's processes run in it: a block can never cut this machine off.

use std::{
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command as Proc, Stdio},
    time::Duration,
};

use osprey_tests::{
    cgroup::TestCgroup,
    collector::{is_exec_with, Collector},
    eventually, marker,
    nats::NatsServer,
    responder::Responder,
    workload,
};
use protocol::{
    signing::{random_id, KeyPair},
    Action, AuditRecord, BootId, Command, CommandResult, CommandStatus, Decision, ExecId,
    Timestamp,
};

/// Loopback counts as non-local, so a script engine connecting to 127.0.0.1 raises the
/// built-in high finding.
const NOTHING_LOCAL: &[&str] = &["--local-networks", "169.254.0.0/16"];

struct Env {
    dir: tempfile::TempDir,
    nats: NatsServer,
    client: async_nats::Client,
    cgroup: TestCgroup,
    key: KeyPair,
}

impl Env {
    async fn new(tag: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start();
        let client = nats.client().await;
        Env {
            cgroup: TestCgroup::create(tag),
            dir,
            nats,
            client,
            key: KeyPair::generate().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn actuator_audit(&self) -> PathBuf {
        self.path("actuator-audit.jsonl")
    }

    fn responder_audit(&self) -> PathBuf {
        self.path("responder-audit.jsonl")
    }

    /// The collector's configuration: hooks on the test's cgroup, this test's key trusted.
    fn collector_config(&self, extra: &str) -> PathBuf {
        let path = self.path("collector.yaml");
        let text = format!(
            "sensor:\n  cgroup_root: {cg}\nactuator:\n  trusted_keys: [\"{key}\"]\n  state_dir: {d}/state\n  audit_file: {audit}\n  quarantine_dir: {d}/quarantine\n  dump_dir: {d}/dumps\n{extra}",
            cg = self.cgroup.path.display(),
            key = self.key.public_base64(),
            d = self.dir.path().display(),
            audit = self.actuator_audit().display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn collector(&self, extra_yaml: &str, host: Option<&str>) -> Collector {
        let config = self.collector_config(extra_yaml);
        Collector::start_with_config(
            &self.client,
            &self.nats.url(),
            &self.path("spool"),
            &config,
            host,
            NOTHING_LOCAL,
        )
        .await
    }

    /// The responder's configuration and policy; returns the config path.
    fn responder_config(&self, policy: &str, extra: &str) -> PathBuf {
        let key = self.path("responder.key");
        std::fs::write(&key, self.key.secret_base64()).unwrap();
        let policy_path = self.path("response-policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let path = self.path("responder.yaml");
        let text = format!(
            "nats:\n  url: {url}\npolicy: {policy}\nsigning_key: {key}\naudit_file: {audit}\nstate_dir: {d}/responder\nheartbeat_timeout_secs: 0\n{extra}",
            url = self.nats.url(),
            policy = policy_path.display(),
            key = key.display(),
            audit = self.responder_audit().display(),
            d = self.dir.path().display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A command to `host`, signed with the trusted key.
    fn signed(&self, host: &str, action: Action) -> Command {
        let mut c = unsigned(host, action);
        self.key.sign(&mut c);
        c
    }

    async fn send(&self, host: &str, command: &Command) -> CommandResult {
        self.send_raw(host, protocol::encode(command).unwrap())
            .await
    }

    async fn send_raw(&self, host: &str, payload: Vec<u8>) -> CommandResult {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client
                .request(protocol::subject::command(host), payload.into()),
        )
        .await
        .expect("the actuator answers within 10 s")
        .expect("request");
        protocol::decode(&reply.payload).expect("a CommandResult")
    }

    /// A process started inside the test's cgroup.
    fn spawn(&self, program: &str, args: &[&str]) -> std::process::Child {
        let mut cmd = Proc::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        self.cgroup
            .enter(&mut cmd)
            .spawn()
            .expect("spawn in the test cgroup")
    }
}

fn unsigned(host: &str, action: Action) -> Command {
    Command {
        id: random_id(),
        nonce: random_id(),
        issued_at: Timestamp::now(),
        host: host.to_string(),
        action,
        finding_id: None,
        operator: None,
        key_id: String::new(),
        signature: None,
    }
}

fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is an AuditRecord"))
        .collect()
}

async fn wait_audit(path: &Path, what: &str, pred: impl Fn(&AuditRecord) -> bool) -> AuditRecord {
    eventually(Duration::from_secs(25), || {
        audit_lines(path).into_iter().find(|r| pred(r))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no audit record for {what} within 25 s; have: {:#?}",
            audit_lines(path)
        )
    })
}

fn boot() -> BootId {
    BootId::from_boot_id_text(&std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap())
        .unwrap()
}

/// The `ExecId` of a live process as /proc shows it (seq 0).
fn exec_id_of(pid: u32) -> ExecId {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = after.split_whitespace().nth(19).unwrap().parse().unwrap();
    ExecId {
        boot: boot(),
        pid,
        start_ticks: ticks,
        seq: 0,
    }
}

/// The `ExecId` the collector gives a process it saw start: what an action must name (its
/// exec sequence number is the collector's own count, not visible in /proc).
async fn live_exec_id(collector: &Collector, pid: u32) -> ExecId {
    collector
        .wait_event("the victim's exec", |e| {
            e.process.pid == pid && matches!(e.detail, protocol::EventDetail::Exec(_))
        })
        .await
        .process
        .exec_id
}

/// Waits for a child to end; returns its status.
async fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    eventually(within, || child.try_wait().ok().flatten()).await
}

/// A python script run in the cgroup that tries `connect()` to each `(ip, port)` and prints
/// `ok` or the errno for each.
fn try_connects(env: &Env, targets: &[(&str, u16)]) -> Vec<String> {
    let list: Vec<String> = targets
        .iter()
        .map(|(ip, port)| format!("('{ip}', {port})"))
        .collect();
    let script = format!(
        "import socket, sys\nfor t in [{}]:\n    s = socket.socket()\n    s.settimeout(3)\n    try:\n        s.connect(t); print('ok')\n    except OSError as e:\n        print(e.errno)\n    s.close()\n",
        list.join(", ")
    );
    let child = env.spawn(workload::PYTHON, &["-c", &script]);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// The built-in heuristic the policies act on.
const NETWORK_RULE: &str = "osprey.script-engine-network";

const KILL_SCRIPT_ENGINES: &str = "rules:\n  - name: kill-script-engines\n    match:\n      rule_ids: [osprey.script-engine-network]\n      min_severity: high\n    actions: [kill]\n";

fn connecting_script(tag: &str, port: u16) -> String {
    format!("# {tag}\nimport socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\ntime.sleep(600)\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_engine_connecting_out_is_killed_by_policy_and_audited() {
    let env = Env::new("kill").await;
    let collector = env.collector("", None).await;
    let responder = Responder::start(&env.responder_config(KILL_SCRIPT_ENGINES, ""), &[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = marker("kill");
    let mut child = env.spawn(workload::PYTHON, &["-c", &connecting_script(&tag, port)]);
    let pid = child.id();

    let status = wait_exit(&mut child, Duration::from_secs(30))
        .await
        .expect("the script engine is killed within 30 s");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "died by SIGKILL: {status:?}"
    );
    let finding = collector
        .wait_finding("script engine", |f| {
            f.process.pid == pid && f.rule_id == NETWORK_RULE
        })
        .await;
    let line = wait_audit(&env.responder_audit(), "the kill", |r| {
        r.action == "kill" && r.finding_id.as_ref() == Some(&finding.id)
    })
    .await;
    assert_eq!(
        (line.decision, line.result.as_str()),
        (Decision::Executed, "ok"),
        "{line:?}"
    );
    assert_eq!(line.target, Some(finding.process.exec_id.to_string()));
    assert_eq!(line.host, collector.host);
    let host_line = wait_audit(&env.actuator_audit(), "the actuator's kill", |r| {
        r.command_id == line.command_id
    })
    .await;
    assert_eq!(host_line.decision, Decision::Executed);
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actuator_refuses_what_it_must_and_audits_each_refusal() {
    let env = Env::new("refuse").await;
    let collector = env
        .collector(
            "  max_actions_per_hour: 2\n  protected_networks: [10.99.0.0/16]\n",
            None,
        )
        .await;
    let host = collector.host.clone();
    let refused = |r: &CommandResult, needle: &str| {
        assert_eq!(r.status, CommandStatus::Refused, "{r:?}");
        assert!(
            r.reason.contains(needle),
            "reason {:?} lacks {needle:?}",
            r.reason
        );
    };

    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Kill {
                    target: exec_id_of(1),
                },
            ),
        )
        .await;
    refused(&r, "pid 1");
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Kill {
                    target: exec_id_of(collector.pid()),
                },
            ),
        )
        .await;
    refused(&r, "collector itself");
    let nats_block = Action::Block {
        cidr: "127.0.0.1/32".into(),
        port: Some(env.nats.port()),
        ttl_secs: Some(5),
    };
    refused(
        &env.send(&host, &env.signed(&host, nats_block)).await,
        "protected destination",
    );
    let net_block = Action::Block {
        cidr: "10.99.1.0/24".into(),
        port: None,
        ttl_secs: Some(5),
    };
    refused(
        &env.send(&host, &env.signed(&host, net_block)).await,
        "protected network",
    );

    // A stale ExecId: the pid now belongs to another process (same pid, other start time).
    let mut victim = env.spawn("/bin/sleep", &["600"]);
    let live = live_exec_id(&collector, victim.id()).await;
    let stale = ExecId {
        start_ticks: live.start_ticks - 1,
        ..live
    };
    refused(
        &env.send(&host, &env.signed(&host, Action::Kill { target: stale }))
            .await,
        "stale ExecId",
    );
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the process behind a stale ExecId lives"
    );

    refused(
        &env.send(&host, &unsigned(&host, Action::Kill { target: live }))
            .await,
        "unsigned",
    );
    let mut foreign = unsigned(&host, Action::Kill { target: live });
    KeyPair::generate().unwrap().sign(&mut foreign);
    refused(&env.send(&host, &foreign).await, "unknown key");
    let mut tampered = env.signed(&host, Action::Kill { target: live });
    tampered.action = Action::Kill {
        target: exec_id_of(1),
    };
    refused(&env.send(&host, &tampered).await, "bad signature");
    let r = env.send_raw(&host, b"\x93garbage".to_vec()).await;
    refused(&r, "malformed");
    let mut old = unsigned(&host, Action::Kill { target: live });
    old.issued_at = Timestamp::from_unix_nanos(Timestamp::now().unix_nanos() - 3_600_000_000_000);
    env.key.sign(&mut old);
    refused(&env.send(&host, &old).await, "stale command");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "nothing refused was executed"
    );

    // Suspend and resume go through; a replay of the resume is refused.
    let suspend = env.signed(
        &host,
        Action::Suspend {
            target: live,
            ttl_secs: None,
        },
    );
    assert_eq!(env.send(&host, &suspend).await.status, CommandStatus::Ok);
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(live.pid), "T", "suspended");
    let resume = env.signed(&host, Action::Resume { target: live });
    assert_eq!(env.send(&host, &resume).await.status, CommandStatus::Ok);
    assert_ne!(state(live.pid), "T", "resumed");
    refused(&env.send(&host, &resume).await, "replayed");
    // The rate limit (2 actions of a kind per hour): the third suspend is refused.
    let s2 = env.signed(
        &host,
        Action::Suspend {
            target: live,
            ttl_secs: Some(1),
        },
    );
    assert_eq!(env.send(&host, &s2).await.status, CommandStatus::Ok);
    let s3 = env.signed(
        &host,
        Action::Suspend {
            target: live,
            ttl_secs: Some(1),
        },
    );
    refused(&env.send(&host, &s3).await, "rate limit");
    // The suspension with a TTL is rolled back by the actuator on its own.
    let rolled = wait_audit(&env.actuator_audit(), "the suspension's rollback", |r| {
        r.decision == Decision::RolledBack && r.action == "suspend"
    })
    .await;
    assert_eq!(rolled.result, "ok");
    assert_ne!(state(live.pid), "T", "resumed by the TTL");

    let audit = audit_lines(&env.actuator_audit());
    let refusals = audit
        .iter()
        .filter(|r| r.decision == Decision::Refused)
        .count();
    assert_eq!(refusals, 12, "every refusal is audited: {audit:#?}");
    let _ = victim.kill();
    let _ = victim.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_destination_fails_with_eperm_until_its_ttl_also_across_a_restart() {
    let env = Env::new("block").await;
    let mut collector = env.collector("", None).await;
    let host = collector.host.clone();
    let blocked = TcpListener::bind("127.0.0.2:0").unwrap();
    let blocked_port = blocked.local_addr().unwrap().port();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let targets = [("127.0.0.2", blocked_port), ("127.0.0.1", open_port)];
    assert_eq!(try_connects(&env, &targets), ["ok", "ok"]);

    let block = env.signed(
        &host,
        Action::Block {
            cidr: "127.0.0.2".into(),
            port: None,
            ttl_secs: Some(4),
        },
    );
    let r = env.send(&host, &block).await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert_eq!(
        try_connects(&env, &targets),
        [libc::EPERM.to_string().as_str(), "ok"]
    );
    let denied = collector
        .wait_event("the denied connect", |e| {
            matches!(&e.detail, protocol::EventDetail::Connect(c)
                if c.destination_port == blocked_port && c.outcome == protocol::Outcome::Denied)
        })
        .await;
    assert!(
        denied.process.exe.contains("python3"),
        "{}",
        denied.process.exe
    );
    eventually(Duration::from_secs(5), || {
        collector.last_heartbeat().filter(|h| h.active_blocks == 1)
    })
    .await
    .expect("heartbeats count the active block");
    let rolled = wait_audit(&env.actuator_audit(), "the block's rollback", |r| {
        r.decision == Decision::RolledBack && r.action == "block"
    })
    .await;
    assert_eq!(
        (rolled.result.as_str(), rolled.target.as_deref()),
        ("ok", Some("127.0.0.2/32"))
    );
    assert_eq!(try_connects(&env, &targets), ["ok", "ok"]);

    // Again with a port, and with the collector restarted while the block is active.
    let block = env.signed(
        &host,
        Action::Block {
            cidr: "127.0.0.2/32".into(),
            port: Some(blocked_port),
            ttl_secs: Some(8),
        },
    );
    assert_eq!(env.send(&host, &block).await.status, CommandStatus::Ok);
    assert_eq!(
        try_connects(&env, &targets),
        [libc::EPERM.to_string().as_str(), "ok"]
    );
    drop(collector);
    collector = env.collector("", Some(&host)).await;
    assert_eq!(
        try_connects(&env, &targets),
        [libc::EPERM.to_string().as_str(), "ok"],
        "the restarted collector re-applies the block"
    );
    let rolled = eventually(Duration::from_secs(25), || {
        audit_lines(&env.actuator_audit())
            .into_iter()
            .filter(|r| r.decision == Decision::RolledBack && r.action == "block")
            .nth(1)
    })
    .await
    .expect("the second block is rolled back after the restart");
    assert_eq!(
        rolled.target.as_deref(),
        Some(format!("127.0.0.2/32 port {blocked_port}").as_str())
    );
    assert_eq!(try_connects(&env, &targets), ["ok", "ok"]);
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_on_exec_catches_every_path_to_the_binary_and_spares_others() {
    let env = Env::new("koe").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let dir = env.path("bin");
    std::fs::create_dir(&dir).unwrap();
    let listed = workload::compile_c(
        &dir,
        "listed",
        "#include <stdio.h>\nint main(void){puts(\"ran\");return 0;}\n",
    );
    let other = workload::compile_c(
        &dir,
        "other",
        "#include <stdio.h>\nint main(void){puts(\"ran\");return 0;}\n",
    );
    std::os::unix::fs::symlink(&listed, dir.join("via-symlink")).unwrap();
    std::fs::hard_link(&listed, dir.join("via-hardlink")).unwrap();

    let cmd = env.signed(
        &host,
        Action::KillOnExec {
            path: Some(listed.display().to_string()),
            ttl_secs: Some(600),
        },
    );
    let r = env.send(&host, &cmd).await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    let run = |program: &Path, cwd: &Path| {
        let out = Proc::new(program).current_dir(cwd).output().expect("exec");
        (
            out.status.signal(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for (how, program) in [
        ("absolute path", listed.clone()),
        ("symlink", dir.join("via-symlink")),
        ("relative path", PathBuf::from("./listed")),
        ("hardlink", dir.join("via-hardlink")),
    ] {
        assert_eq!(
            run(&program, &dir),
            (Some(libc::SIGKILL), String::new()),
            "{how}: killed before printing"
        );
    }
    assert_eq!(
        run(&other, &dir),
        (None, "ran\n".to_string()),
        "another binary runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_locks_a_file_away_and_restore_brings_it_back_and_a_dump_holds_heap_secrets() {
    let env = Env::new("quarantine").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let dir = env.path("bin");
    std::fs::create_dir(&dir).unwrap();
    let bin = workload::compile_c(
        &dir,
        "suspect",
        "#include <stdio.h>\nint main(void){puts(\"ran\");return 0;}\n",
    );
    let hash = |p: &Path| {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let original = hash(&bin);
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Quarantine {
                    target: None,
                    path: Some(bin.display().to_string()),
                },
            ),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    assert!(!bin.exists(), "moved away");
    let moved = PathBuf::from(r.output.expect("the quarantined file's path"));
    let err = Proc::new(&moved)
        .output()
        .expect_err("a quarantined file cannot be executed");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    let id = moved.file_name().unwrap().to_string_lossy().into_owned();
    let status = Proc::new(osprey_tests::bin_dir().join("osprey"))
        .args(["quarantine", "restore", &id, "--dir"])
        .arg(moved.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(hash(&bin), original, "restored with the same content");
    assert_eq!(Proc::new(&bin).output().unwrap().stdout, b"ran\n");

    // A memory dump holds a secret the process made at run time and kept only in its heap.
    let tag = marker("dump");
    let script = format!("# {tag}\nimport os, sys, time\nsecret = 'SECRET' + os.urandom(16).hex()\nkeep = [secret * 4]\nsys.stdout.write(secret + '\\n'); sys.stdout.flush()\ntime.sleep(600)\n");
    let mut child = env.spawn(workload::PYTHON, &["-c", &script]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let secret = line.trim().to_string();
    let exec = collector
        .wait_event("python exec", |e| is_exec_with(e, &tag))
        .await;
    let r = env
        .send(
            &host,
            &env.signed(
                &host,
                Action::Dump {
                    target: exec.process.exec_id,
                },
            ),
        )
        .await;
    assert_eq!(r.status, CommandStatus::Ok, "{r:?}");
    let dump = PathBuf::from(r.output.unwrap());
    assert!(dump.join("maps").exists());
    let found = std::fs::read_dir(&dump).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    });
    assert!(found, "the dump contains the heap secret");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_decides_and_audits_but_sends_nothing() {
    let env = Env::new("dryrun").await;
    let collector = env.collector("", None).await;
    let mut commands = env.client.subscribe("osprey.cmd.>").await.unwrap();
    env.client.flush().await.unwrap();
    let responder = Responder::start(
        &env.responder_config(KILL_SCRIPT_ENGINES, "dry_run: true\n"),
        &[],
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tag = marker("dry");
    let mut child = env.spawn(
        workload::PYTHON,
        &[
            "-c",
            &connecting_script(&tag, listener.local_addr().unwrap().port()),
        ],
    );
    let finding = collector
        .wait_finding("script engine", |f| {
            f.process.pid == child.id() && f.rule_id == NETWORK_RULE
        })
        .await;
    let line = wait_audit(&env.responder_audit(), "the dry run", |r| {
        r.finding_id.as_ref() == Some(&finding.id)
    })
    .await;
    assert_eq!(
        (line.decision, line.action.as_str()),
        (Decision::DryRun, "kill")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "the target survives");
    let sent = tokio::time::timeout(
        Duration::from_millis(200),
        futures::StreamExt::next(&mut commands),
    )
    .await;
    assert!(sent.is_err(), "nothing was published on osprey.cmd.*");
    responder.stop();
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_published_while_the_responder_is_down_are_all_acted_on_once() {
    let env = Env::new("durable").await;
    let collector = env.collector("", None).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(env.spawn(
            workload::PYTHON,
            &["-c", &connecting_script(&marker(&format!("down{i}")), port)],
        ));
    }
    let mut findings = Vec::new();
    for child in &children {
        findings.push(
            collector
                .wait_finding("script engine", |f| {
                    f.process.pid == child.id() && f.rule_id == NETWORK_RULE
                })
                .await,
        );
    }
    let responder = Responder::start(&env.responder_config(KILL_SCRIPT_ENGINES, ""), &[]);
    for child in &mut children {
        let status = wait_exit(child, Duration::from_secs(30))
            .await
            .expect("killed once the responder is up");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    for f in &findings {
        wait_audit(&env.responder_audit(), "a kill", |r| {
            r.finding_id.as_ref() == Some(&f.id) && r.decision == Decision::Executed
        })
        .await;
    }
    // Redelivery (the same finding again, under another message id): no second action.
    let again = &findings[0];
    let js = async_nats::jetstream::new(env.client.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("redelivery-{}", again.id).as_str());
    js.publish_with_headers(
        protocol::subject::findings(&again.host, again.severity),
        headers,
        protocol::encode(again).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let for_first = audit_lines(&env.responder_audit())
        .into_iter()
        .filter(|r| r.finding_id.as_ref() == Some(&again.id))
        .count();
    assert_eq!(
        for_first, 1,
        "a redelivered finding causes no second action"
    );
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_refuses_protected_targets_stale_ids_and_the_rate_limits_next_action() {
    let env = Env::new("rrefuse").await;
    let collector = env.collector("", None).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let responder = Responder::start(
        &env.responder_config(KILL_SCRIPT_ENGINES, "rate_limits:\n  kill: 1\n"),
        &[],
    );
    // The first kill goes through; the second within the hour is rate-limited.
    let mut first = env.spawn(
        workload::PYTHON,
        &["-c", &connecting_script(&marker("r1"), port)],
    );
    let f1 = collector
        .wait_finding("first", |f| {
            f.process.pid == first.id() && f.rule_id == NETWORK_RULE
        })
        .await;
    wait_exit(&mut first, Duration::from_secs(30))
        .await
        .expect("the first is killed");
    let mut second = env.spawn(
        workload::PYTHON,
        &["-c", &connecting_script(&marker("r2"), port)],
    );
    let f2 = collector
        .wait_finding("second", |f| {
            f.process.pid == second.id() && f.rule_id == NETWORK_RULE
        })
        .await;
    let line = wait_audit(&env.responder_audit(), "the rate limit", |r| {
        r.finding_id.as_ref() == Some(&f2.id)
    })
    .await;
    assert_eq!(line.decision, Decision::RateLimited, "{line:?}");
    assert!(
        second.try_wait().unwrap().is_none(),
        "the N+1th target survives"
    );
    assert!(audit_lines(&env.responder_audit())
        .iter()
        .any(|r| r.finding_id.as_ref() == Some(&f1.id) && r.decision == Decision::Executed));
    let _ = second.kill();
    let _ = second.wait();
    responder.stop();

    // Forged findings through the stream (a restarted responder with a higher limit):
    // pid 1, the collector itself, a stale ExecId, and a block of the NATS server.
    let policy = format!(
        "{KILL_SCRIPT_ENGINES}  - name: block-forged\n    match:\n      rule_ids: [forged.block]\n    actions: [block]\n"
    );
    let responder = Responder::start(
        &env.responder_config(&policy, "rate_limit_per_hour: 100\n"),
        &[],
    );
    let js = async_nats::jetstream::new(env.client.clone());
    let mut victim = env.spawn("/bin/sleep", &["600"]);
    let live = live_exec_id(&collector, victim.id()).await;
    let cases = [
        ("pid 1", exec_id_of(1), "pid 1"),
        (
            "the collector",
            exec_id_of(collector.pid()),
            "collector itself",
        ),
        (
            "a stale ExecId",
            ExecId {
                start_ticks: live.start_ticks - 1,
                ..live
            },
            "stale ExecId",
        ),
    ];
    // f1's trigger is a connect to 127.0.0.1, where the NATS server listens.
    let cases = cases
        .into_iter()
        .map(|(what, target, needle)| (what, target, needle, NETWORK_RULE))
        .chain([(
            "a protected destination",
            live,
            "protected destination",
            "forged.block",
        )]);
    for (what, target, needle, rule) in cases {
        let mut f = f1.clone();
        f.process.exec_id = target;
        f.process.pid = target.pid;
        f.process.exe = "/usr/bin/python3".into();
        f.rule_id = rule.into();
        f.id = protocol::FindingId(format!("forged-{}", random_id()));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", f.id.0.as_str());
        js.publish_with_headers(
            protocol::subject::findings(&f.host, f.severity),
            headers,
            protocol::encode(&f).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let line = wait_audit(&env.responder_audit(), what, |r| {
            r.finding_id.as_ref() == Some(&f.id)
        })
        .await;
        assert_eq!(line.decision, Decision::Refused, "{what}: {line:?}");
        assert!(
            line.reason.contains(needle),
            "{what}: {:?} lacks {needle:?}",
            line.reason
        );
    }
    assert!(victim.try_wait().unwrap().is_none());
    let _ = victim.kill();
    let _ = victim.wait();
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_exits_with_a_clear_message_without_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Proc::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = dir.path().join("k");
    std::fs::write(&key, KeyPair::generate().unwrap().secret_base64()).unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, KILL_SCRIPT_ENGINES).unwrap();
    let config = dir.path().join("r.yaml");
    std::fs::write(&config, format!("nats:\n  url: nats://127.0.0.1:{port}\npolicy: {}\nsigning_key: {}\nstate_dir: {}\naudit_file: {}\n", policy.display(), key.display(), dir.path().join("s").display(), dir.path().join("a").display())).unwrap();
    let out = Responder::run_to_exit(&config, &[]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("JetStream is required"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_impact_actions_wait_for_a_signed_operator_approval_or_denial() {
    let env = Env::new("approve").await;
    let collector = env.collector("", None).await;
    let operator = KeyPair::generate().unwrap();
    let operator_key = env.path("operator.key");
    std::fs::write(&operator_key, operator.secret_base64()).unwrap();
    let policy = format!("approval_required: [kill]\n{KILL_SCRIPT_ENGINES}");
    let config = env.responder_config(
        &policy,
        &format!("operator_keys: [\"{}\"]\n", operator.public_base64()),
    );
    let responder = Responder::start(&config, &[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let osprey = |verb: &str, id: &str| {
        let status = Proc::new(osprey_tests::bin_dir().join("osprey"))
            .args([verb, id, "--nats", &env.nats.url(), "--key"])
            .arg(&operator_key)
            .status()
            .unwrap();
        assert!(status.success(), "osprey {verb}");
    };

    for verb in ["approve", "deny"] {
        let mut child = env.spawn(
            workload::PYTHON,
            &["-c", &connecting_script(&marker(verb), port)],
        );
        let finding = collector
            .wait_finding("script engine", |f| {
                f.process.pid == child.id() && f.rule_id == NETWORK_RULE
            })
            .await;
        let pending = wait_audit(&env.responder_audit(), "awaiting approval", |r| {
            r.finding_id.as_ref() == Some(&finding.id) && r.decision == Decision::AwaitingApproval
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "nothing happens before the operator answers"
        );
        osprey(verb, &pending.result);
        if verb == "approve" {
            let status = wait_exit(&mut child, Duration::from_secs(20))
                .await
                .expect("killed once approved");
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            for decision in [Decision::Approved, Decision::Executed] {
                wait_audit(&env.responder_audit(), "approval", |r| {
                    r.finding_id.as_ref() == Some(&finding.id) && r.decision == decision
                })
                .await;
            }
        } else {
            wait_audit(&env.responder_audit(), "denial", |r| {
                r.finding_id.as_ref() == Some(&finding.id) && r.decision == Decision::Denied
            })
            .await;
            assert!(
                child.try_wait().unwrap().is_none(),
                "a denied action is not taken"
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_heartbeat_stops_raises_a_finding() {
    let env = Env::new("silence").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let mut findings = env
        .client
        .subscribe(format!("osprey.findings.{host}.>"))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let config = env.responder_config(KILL_SCRIPT_ENGINES, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("heartbeat_timeout_secs: 0", "heartbeat_timeout_secs: 2");
    std::fs::write(&config, text).unwrap();
    let responder = Responder::start(&config, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(collector);
    let silent = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = futures::StreamExt::next(&mut findings).await {
            let f: protocol::Finding = protocol::decode(&m.payload).unwrap();
            if f.rule_id == "osprey.host-silent" {
                return f;
            }
        }
        panic!("subscription ended");
    })
    .await
    .expect("a host-silence finding within 20 s");
    assert_eq!(
        (silent.host.as_str(), silent.severity),
        (host.as_str(), protocol::Severity::High)
    );
    assert_eq!(silent.detector, protocol::Detector::Responder);
    responder.stop();
}
