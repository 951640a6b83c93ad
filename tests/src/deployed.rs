//! The pieces of a deployment around the shipped NATS configuration ([`crate::nats`]): each
//! collector with its host's credentials and an actuator that trusts the responder's key, the
//! responder with its credentials, an operator client — configured the way docs/nats.md
//! tells a user to.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use protocol::{signing::KeyPair, AuditRecord};

use crate::{
    cgroup::TestCgroup,
    collector::Collector,
    nats::{BusClient, Deployment},
};

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub deployment: Deployment,
    /// The NATS URL (one server, or a cluster's servers comma-separated).
    pub url: String,
    /// The responder's signing key; every actuator trusts it.
    pub key: KeyPair,
    pub operator: BusClient,
    /// The collectors' connect hooks attach here, so nothing a test does reaches further.
    pub cgroup: TestCgroup,
}

impl Stack {
    /// `deployment` must already list every host the test runs.
    pub async fn new(tag: &str, deployment: Deployment, url: String) -> Stack {
        let operator = deployment.operator(&url).await;
        Stack {
            dir: tempfile::tempdir().unwrap(),
            deployment,
            url,
            key: KeyPair::generate().unwrap(),
            operator,
            cgroup: TestCgroup::create(tag),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn actuator_audit(&self, host: &str) -> PathBuf {
        self.path(&format!(
            "{}-actuator-audit.jsonl",
            protocol::subject::host_token(host)
        ))
    }

    pub fn responder_audit(&self) -> PathBuf {
        self.path("responder-audit.jsonl")
    }

    pub fn spool(&self, host: &str) -> PathBuf {
        self.path(&format!("{}-spool", protocol::subject::host_token(host)))
    }

    /// A collector's configuration for `host`: its NKey, hooks on the test's cgroup, the
    /// responder's key trusted, state and audit under the test's directory; `extra` is more
    /// YAML (top-level keys other than nats, sensor and actuator).
    pub fn collector_config(&self, host: &str, extra: &str) -> PathBuf {
        let token = protocol::subject::host_token(host);
        let d = self.dir.path().display();
        let text = format!(
            "host: \"{host}\"\nnats:\n  credentials: {creds}\nsensor:\n  cgroup_root: {cg}\nactuator:\n  trusted_keys: [\"{key}\"]\n  state_dir: {d}/{token}-state\n  audit_file: {audit}\n  quarantine_dir: {d}/{token}-quarantine\n  dump_dir: {d}/{token}-dumps\n{extra}",
            creds = self.deployment.host_creds(host).display(),
            cg = self.cgroup.path.display(),
            key = self.key.public_base64(),
            audit = self.actuator_audit(host).display(),
        );
        let path = self.path(&format!("{token}-collector.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the collector of `host` and waits for its first heartbeat.
    pub async fn collector(&self, host: &str, extra_yaml: &str, args: &[&str]) -> Collector {
        let config = self.collector_config(host, extra_yaml);
        Collector::start_with_config(
            &self.operator.client,
            &self.url,
            &self.spool(host),
            &config,
            Some(host),
            args,
        )
        .await
    }

    /// The responder's configuration with `policy` as its response policy; `extra` is more
    /// YAML.
    pub fn responder_config(&self, policy: &str, extra: &str) -> PathBuf {
        let key = self.path("responder.key");
        std::fs::write(&key, self.key.secret_base64()).unwrap();
        let policy_path = self.path("response-policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let path = self.path("responder.yaml");
        let text = format!(
            "nats:\n  url: \"{url}\"\n  credentials: {creds}\npolicy: {policy}\nsigning_key: {key}\naudit_file: {audit}\nstate_dir: {d}/responder\n{extra}",
            url = self.url,
            creds = self.deployment.responder_creds().display(),
            policy = policy_path.display(),
            key = key.display(),
            audit = self.responder_audit().display(),
            d = self.dir.path().display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The audit records of a JSON-lines audit file.
pub fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is an AuditRecord"))
        .collect()
}

/// Waits until `done` holds for the audit file's records.
pub async fn wait_audit<T>(
    path: &Path,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[AuditRecord]) -> Option<T>,
) -> T {
    match crate::eventually(within, || done(&audit_lines(path))).await {
        Some(v) => v,
        None => panic!(
            "{what}: not within {within:?}; the audit file has {} records, last: {:#?}",
            audit_lines(path).len(),
            audit_lines(path).last()
        ),
    }
}

/// A copy of `program` under a name of its own (`osprey-e2e-<tag>-...`), so a policy rule on
/// its path matches only the test's processes.
pub fn marked_binary(dir: &Path, program: &str, tag: &str) -> PathBuf {
    let path = dir.join(crate::marker(tag));
    std::fs::copy(program, &path).unwrap_or_else(|e| panic!("copy {program}: {e}"));
    path
}

/// A detection policy file: one exec rule per `(id, severity, program)`, matching that
/// program's path.
pub fn detection_policy(dir: &Path, rules: &[(&str, protocol::Severity, &Path)]) -> PathBuf {
    let mut text = String::from("rules:\n");
    for (id, severity, program) in rules {
        text.push_str(&format!(
            "  - id: {id}\n    title: {id}\n    severity: {severity}\n    events: [exec]\n    match:\n      path: \"{}\"\n",
            program.display()
        ));
    }
    let path = dir.join(format!("policy-{}.yaml", crate::marker("p")));
    std::fs::write(&path, text).unwrap();
    path
}

/// A finding of `host` as its collector would raise it (process number `n`, rule `rule`).
pub fn synthetic_finding(
    host: &str,
    n: u32,
    rule: &str,
    severity: protocol::Severity,
) -> protocol::Finding {
    use protocol::*;
    let exec_id = ExecId {
        boot: BootId(0x0e2e),
        pid: 100_000 + n,
        start_ticks: 1000 + u64::from(n),
        seq: 1,
    };
    Finding {
        id: FindingId::new(host, &exec_id, Detector::Policy, rule),
        time: Timestamp::now(),
        host: host.to_string(),
        detector: Detector::Policy,
        rule_id: rule.to_string(),
        title: format!("{rule} #{n}"),
        description: None,
        author: None,
        severity,
        tags: Vec::new(),
        process: Process {
            ppid: 1,
            start_time: Timestamp::now(),
            ..Process::new(exec_id, "/usr/bin/e2e-synthetic", vec![format!("#{n}")])
        },
        ancestry: Vec::new(),
        triggers: Vec::new(),
        recommended_actions: Vec::new(),
    }
}

/// Publishes a finding through JetStream as `host` would (its subject, a message id) and
/// waits for the stream's acknowledgement.
pub async fn publish_finding(
    client: &async_nats::Client,
    finding: &protocol::Finding,
    msg_id: &str,
    subject_host: &str,
) -> async_nats::jetstream::publish::PublishAck {
    let js = async_nats::jetstream::new(client.clone());
    let publish = async_nats::jetstream::context::Publish::build()
        .payload(protocol::encode(finding).unwrap().into())
        .message_id(msg_id);
    js.send_publish(
        protocol::subject::findings(subject_host, finding.severity),
        publish,
    )
    .await
    .expect("publish")
    .await
    .expect("the stream acknowledges")
}

/// Waits until `OSPREY_FINDINGS` exists (the responder creates it) and returns it.
pub async fn wait_stream(client: &async_nats::Client) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(client.clone());
    for _ in 0..300 {
        if let Ok(stream) = js.get_stream(protocol::subject::FINDINGS_STREAM).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream OSPREY_FINDINGS was not created within 30 s");
}

/// A finding as the stream holds it.
pub struct Stored {
    pub subject: String,
    pub finding: protocol::Finding,
    /// When the stream stored it (Unix nanoseconds).
    pub stored_at: i128,
}

/// Every finding stored on subjects matching `filter`, in stream order (read through an
/// ordered consumer, as an operator may).
pub async fn stored_findings(client: &async_nats::Client, filter: &str) -> Vec<Stored> {
    use futures::StreamExt;
    let stream = wait_stream(client).await;
    // A cluster that just lost a node may take a few seconds to place a new consumer.
    let mut attempts = 0;
    let consumer = loop {
        let created = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await;
        match created {
            Ok(consumer) => break consumer,
            Err(e) if attempts < 30 => {
                attempts += 1;
                eprintln!("creating a reader of the findings stream: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("cannot create a reader of the findings stream: {e}"),
        }
    };
    let mut messages = consumer.messages().await.expect("read the findings stream");
    let mut out = Vec::new();
    // The stream is read to its end: nothing more within a second.
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(1), messages.next()).await
    {
        let message = message.expect("a stored finding");
        let stored_at = message
            .info()
            .expect("stream metadata")
            .published
            .unix_timestamp_nanos();
        out.push(Stored {
            subject: message.subject.to_string(),
            finding: protocol::decode(&message.payload).expect("a finding"),
            stored_at,
        });
    }
    out
}

/// The number in the first argument of a finding's process (`program N`).
pub fn index_of(finding: &protocol::Finding) -> Option<usize> {
    finding.process.argv.get(1)?.parse().ok()
}

/// Runs `program i` for each `i` in `range`, one after the other, in `cgroup`.
pub fn run_each(cgroup: &TestCgroup, program: &Path, range: std::ops::Range<usize>) {
    for i in range {
        let status = cgroup
            .enter(std::process::Command::new(program).arg(i.to_string()))
            .stdin(std::process::Stdio::null())
            .status()
            .expect("run the program");
        assert!(status.success(), "{} {i}: {status}", program.display());
    }
}
