//! Driving the actuator and the responder: an environment with a nats-server, a cgroup of
//! the test's own (the collector's connect hooks attach to it and the test's processes run
//! in it, so a block can never cut this machine off), a trusted signing key, and helpers to
//! send signed commands and read the audit trail.

use std::{
    path::{Path, PathBuf},
    process::{Command as Proc, Stdio},
    time::Duration,
};

use protocol::{signing::KeyPair, Action, AuditRecord, BootId, Command, CommandResult, ExecId};

use crate::{cgroup::TestCgroup, collector::Collector, eventually, nats::NatsServer, workload};

/// Loopback counts as non-local, so a script engine connecting to 127.0.0.1 raises the
/// built-in high finding.
pub const NOTHING_LOCAL: &[&str] = &["--local-networks", "169.254.0.0/16"];

pub struct Env {
    pub dir: tempfile::TempDir,
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub cgroup: TestCgroup,
    pub key: KeyPair,
}

impl Env {
    pub async fn new(tag: &str) -> Env {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn actuator_audit(&self) -> PathBuf {
        self.path("actuator-audit.jsonl")
    }

    pub fn responder_audit(&self) -> PathBuf {
        self.path("responder-audit.jsonl")
    }

    /// The collector's configuration: hooks on the test's cgroup, this test's key trusted.
    pub fn collector_config(&self, extra: &str) -> PathBuf {
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

    pub async fn collector(&self, extra_yaml: &str, host: Option<&str>) -> Collector {
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
    pub fn responder_config(&self, policy: &str, extra: &str) -> PathBuf {
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
    pub fn signed(&self, host: &str, action: Action) -> Command {
        let mut c = unsigned(host, action);
        self.key.sign(&mut c);
        c
    }

    pub async fn send(&self, host: &str, command: &Command) -> CommandResult {
        self.send_raw(host, protocol::encode(command).unwrap())
            .await
    }

    pub async fn send_raw(&self, host: &str, payload: Vec<u8>) -> CommandResult {
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
    pub fn spawn(&self, program: &str, args: &[&str]) -> std::process::Child {
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

pub fn unsigned(host: &str, action: Action) -> Command {
    Command::new(host, action, None)
}

pub fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is an AuditRecord"))
        .collect()
}

pub async fn wait_audit(
    path: &Path,
    what: &str,
    pred: impl Fn(&AuditRecord) -> bool,
) -> AuditRecord {
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

pub fn boot() -> BootId {
    BootId::from_boot_id_text(&std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap())
        .unwrap()
}

/// The `ExecId` of a live process as /proc shows it (seq 0).
pub fn exec_id_of(pid: u32) -> ExecId {
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
pub async fn live_exec_id(collector: &Collector, pid: u32) -> ExecId {
    collector
        .wait_event("the victim's exec", |e| {
            e.process.pid == pid && matches!(e.detail, protocol::EventDetail::Exec(_))
        })
        .await
        .process
        .exec_id
}

/// Waits for a child to end; returns its status.
pub async fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    eventually(within, || child.try_wait().ok().flatten()).await
}

/// A python script run in the cgroup that tries `connect()` to each `(ip, port)` and prints
/// `ok` or the errno for each.
pub fn try_connects(env: &Env, targets: &[(&str, u16)]) -> Vec<String> {
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
