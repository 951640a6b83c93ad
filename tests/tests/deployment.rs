//! The shipped NATS deployment, end to end: `deploy/nats/nats-server.conf` exactly, with
//! credentials from `osprey creds`, carrying real collectors, the responder and operators.
//! What a host may not do is refused by the server; what the responder decided survives its
//! crashes; nothing one host publishes can silence another.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::process::ExitStatusExt,
    process::{Command as Proc, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use futures::StreamExt;
use osprey_tests::{
    deployed::{
        audit_lines, detection_policy, marked_binary, publish_finding, synthetic_finding,
        wait_audit, wait_stream, Stack,
    },
    eventually,
    nats::{Deployment, NatsServer},
    responder::Responder,
};
use protocol::{
    signing::KeyPair, subject, Action, AuditRecord, Command, CommandResult, CommandStatus,
    Decision, Detector, FindingId, Severity, Timestamp,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// A response policy that kills what rule `rule` found.
fn kill_policy(rule: &str) -> String {
    format!("rules:\n  - name: kill-{rule}\n    match:\n      rule_ids: [{rule}]\n    actions: [kill]\n")
}

/// Responder settings for tests: no host-silence findings, no rate limit.
const QUIET: &str = "heartbeat_timeout_secs: 0\nrate_limit_per_hour: 0\n";

fn signed(key: &KeyPair, host: &str, action: Action) -> Command {
    let mut c = Command::new(host, action, None);
    key.sign(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_may_only_use_its_own_subjects() {
    let (a, b) = ("host-a.example", "host-b.example");
    let deployment = Deployment::new(&[a, b]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("perm", deployment, nats.url()).await;
    // The responder creates the stream: hosts may not.
    let responder = Responder::start(&stack.responder_config("rules: []\n", QUIET), &[]);
    let mut stream = wait_stream(&stack.operator.client).await;

    let host_a = stack.deployment.host(&stack.url, a).await;
    let client = &host_a.client;

    // What it may do: its own findings (acknowledged by the stream), heartbeat, audit, and
    // receiving its own commands.
    let own = synthetic_finding(a, 1, "e2e-perm", Severity::High);
    let ack = publish_finding(client, &own, "a-1", a).await;
    assert!(!ack.duplicate);
    client
        .publish(subject::heartbeat(a), "hb".into())
        .await
        .unwrap();
    client
        .publish(subject::audit(a), "au".into())
        .await
        .unwrap();
    let _commands = client.subscribe(subject::command(a)).await.unwrap();
    client.flush().await.unwrap();

    // What it may not: each refused by the server.
    let b_token = subject::host_token(b);
    let subscriptions = [
        "_INBOX.>".to_string(),
        "_INBOX.responder.>".to_string(),
        "_INBOX.operator.>".to_string(),
        format!("_INBOX.host.{b_token}.>"),
        format!("osprey.findings.{b_token}.>"),
        subject::command(b),
        subject::query(b),
        "osprey.cmd.*".to_string(),
        "osprey.>".to_string(),
        "$JS.>".to_string(),
    ];
    for s in &subscriptions {
        let _sub = client.subscribe(s.clone()).await.unwrap();
        let error = host_a
            .wait_error(&format!("subscription to \"{s}\""), Duration::from_secs(5))
            .await;
        assert!(
            error.is_some(),
            "subscribing {s} was not refused; errors: {:?}",
            host_a.errors()
        );
    }
    let publishes = [
        subject::findings(b, Severity::High),
        subject::heartbeat(b),
        subject::audit(b),
        subject::events(b, protocol::EventKind::Exec),
        subject::APPROVALS.to_string(),
        subject::AUDIT_RESPONDER.to_string(),
        subject::command(b),
        subject::query(b),
        "_INBOX.operator.reply".to_string(),
        "$JS.API.STREAM.CREATE.OSPREY_FINDINGS".to_string(),
        "$JS.API.STREAM.CREATE.ELSEWHERE".to_string(),
        "$JS.API.STREAM.UPDATE.OSPREY_FINDINGS".to_string(),
        "$JS.API.STREAM.DELETE.OSPREY_FINDINGS".to_string(),
        "$JS.API.STREAM.PURGE.OSPREY_FINDINGS".to_string(),
        "$JS.API.CONSUMER.CREATE.OSPREY_FINDINGS".to_string(),
        format!(
            "$JS.ACK.OSPREY_FINDINGS.{}.1.1.1.1.0",
            bus::permissions::RESPONDER_CONSUMER
        ),
    ];
    for s in &publishes {
        client.publish(s.clone(), "x".into()).await.unwrap();
        client.flush().await.unwrap();
        let error = host_a
            .wait_error(&format!("publish to \"{s}\""), Duration::from_secs(5))
            .await;
        assert!(
            error.is_some(),
            "publishing to {s} was not refused; errors: {:?}",
            host_a.errors()
        );
    }
    // Through the JetStream API the same: no stream can be made.
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    let made = js
        .create_stream(jetstream::stream::Config {
            name: "ELSEWHERE".into(),
            subjects: vec!["elsewhere.>".into()],
            ..Default::default()
        })
        .await;
    assert!(made.is_err(), "a host created a stream");

    // Nothing reached host B's subjects, and B's commands are answered by nobody but B.
    assert!(stream
        .get_last_raw_message_by_subject(&subject::findings(b, Severity::High))
        .await
        .is_err());
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let request = stack
        .operator
        .client
        .request(subject::command(b), "who answers?".into())
        .await;
    assert!(
        matches!(&request, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders),
        "{request:?}"
    );
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_web_1_never_reaches_the_host_web_underscore_1() {
    // Two hosts whose names differ by one character that the old token scheme merged.
    let deployment = Deployment::new(&["web_1", "web.1"]);
    assert_ne!(subject::host_token("web.1"), subject::host_token("web_1"));
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("inject", deployment, nats.url()).await;
    let responder = Responder::start(&stack.responder_config("rules: []\n", QUIET), &[]);
    wait_stream(&stack.operator.client).await;
    let collector = stack.collector("web_1", "", &[]).await;
    let mut victim = stack
        .cgroup
        .enter(Proc::new("/bin/sleep").arg("600"))
        .spawn()
        .unwrap();
    let target = collector
        .wait_event("the victim's exec", |e| {
            e.process.pid == victim.id() && matches!(e.detail, protocol::EventDetail::Exec(_))
        })
        .await
        .process
        .exec_id;

    // Addressed to web.1: its subject has no listener (web.1 runs no collector here).
    let for_web_dot_1 = signed(
        &stack.key,
        "web.1",
        Action::Kill {
            target,
            tree: false,
        },
    );
    let sent = stack
        .operator
        .client
        .request(
            subject::command("web.1"),
            protocol::encode(&for_web_dot_1).unwrap().into(),
        )
        .await;
    assert!(
        matches!(&sent, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders),
        "{sent:?}"
    );
    // Put on web_1's subject anyway: web_1's actuator refuses it.
    let misrouted = signed(
        &stack.key,
        "web.1",
        Action::Kill {
            target,
            tree: false,
        },
    );
    let reply = stack
        .operator
        .client
        .request(
            subject::command("web_1"),
            protocol::encode(&misrouted).unwrap().into(),
        )
        .await
        .unwrap();
    let result: CommandResult = protocol::decode(&reply.payload).unwrap();
    assert_eq!(result.status, CommandStatus::Refused, "{result:?}");
    assert!(result.reason.contains("web.1"), "{}", result.reason);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(victim.try_wait().unwrap().is_none(), "the victim lives");
    let _ = victim.kill();
    let _ = victim.wait();
    drop(collector);
    responder.stop();
}

/// Must show 1: with the shipped configuration and credentials, 1,500 findings of one
/// collector are all acted on (each a live process, killed through the host's actuator), the
/// responder's consumer ends with nothing pending, and the actuator's audit records arrive
/// on the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_deployment_acts_on_1500_findings_of_one_collector() {
    const N: usize = 1500;
    let host = "fleet-1.example";
    let deployment = Deployment::new(&[host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("fleet", deployment, nats.url()).await;
    let victim = marked_binary(stack.dir.path(), "/bin/sleep", "victim");
    let rule = "e2e-fleet-victim";
    let policy = detection_policy(stack.dir.path(), &[(rule, Severity::High, &victim)]);
    let mut host_audit = stack
        .operator
        .client
        .subscribe(subject::audit(host))
        .await
        .unwrap();
    stack.operator.client.flush().await.unwrap();
    let responder = Responder::start(&stack.responder_config(&kill_policy(rule), QUIET), &[]);
    wait_stream(&stack.operator.client).await;
    let collector = stack
        .collector(host, "", &["--policy", policy.to_str().unwrap()])
        .await;

    let mut victims: Vec<std::process::Child> = (0..N)
        .map(|_| {
            stack
                .cgroup
                .enter(Proc::new(&victim).arg("600").stdin(Stdio::null()))
                .spawn()
                .expect("spawn a victim")
        })
        .collect();
    let pids: BTreeSet<u32> = victims.iter().map(|c| c.id()).collect();

    // Every victim dies by SIGKILL, sent by the actuator on the responder's command.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let mut statuses = HashMap::new();
    while statuses.len() < N && tokio::time::Instant::now() < deadline {
        for child in &mut victims {
            if let Ok(Some(status)) = child.try_wait() {
                statuses.insert(child.id(), status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        statuses.len(),
        N,
        "victims killed by the responder's commands (responder audit has {} records)",
        audit_lines(&stack.responder_audit()).len()
    );
    assert!(statuses.values().all(|s| s.signal() == Some(libc::SIGKILL)));

    let findings = collector.findings(|f| f.rule_id == rule);
    assert_eq!(findings.len(), N, "one finding per victim");
    let finding_ids: BTreeSet<FindingId> = findings.iter().map(|f| f.id.clone()).collect();
    assert!(findings.iter().all(|f| pids.contains(&f.process.pid)));
    let executed: Vec<AuditRecord> = audit_lines(&stack.responder_audit())
        .into_iter()
        .filter(|r| {
            r.finding_id
                .as_ref()
                .is_some_and(|id| finding_ids.contains(id))
        })
        .collect();
    assert_eq!(executed.len(), N, "one decision per finding");
    assert!(executed
        .iter()
        .all(|r| r.decision == Decision::Executed && r.action == "kill" && r.host == host));
    let command_ids: BTreeSet<String> = executed
        .iter()
        .map(|r| r.command_id.clone().unwrap())
        .collect();
    assert_eq!(command_ids.len(), N);

    // The actuator's own records of those commands, as the bus carried them.
    let mut on_bus = BTreeSet::new();
    let collect = tokio::time::timeout(PATIENCE, async {
        while on_bus.len() < N {
            let m = host_audit.next().await.expect("audit subscription open");
            let r: AuditRecord = protocol::decode(&m.payload).unwrap();
            if r.decision == Decision::Executed
                && r.command_id
                    .as_ref()
                    .is_some_and(|c| command_ids.contains(c))
            {
                on_bus.insert(r.command_id.unwrap());
            }
        }
    })
    .await;
    assert!(
        collect.is_ok(),
        "{} of {N} actuator audit records on the bus",
        on_bus.len()
    );

    // The responder acked everything it was given.
    let js = jetstream::new(stack.operator.client.clone());
    let stream = js.get_stream(subject::FINDINGS_STREAM).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let info = loop {
        let info = stream
            .consumer_info(bus::permissions::RESPONDER_CONSUMER)
            .await
            .expect("operators may read the responder's consumer info")
            .clone();
        if (info.num_ack_pending == 0 && info.num_pending == 0)
            || tokio::time::Instant::now() > deadline
        {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (info.num_ack_pending, info.num_pending),
        (0, 0),
        "the responder's consumer has nothing pending"
    );
    assert!(info.delivered.stream_sequence >= N as u64);
    let heartbeat = eventually(PATIENCE, || {
        collector
            .last_heartbeat()
            .filter(|h| h.spool_depth == 0 && h.findings >= N as u64)
    })
    .await
    .expect("a heartbeat after the flow");
    assert_eq!((heartbeat.spool_evicted, heartbeat.findings_failed), (0, 0));
    drop(collector);
    responder.stop();
}

/// Must show 3: host A publishes, first, findings carrying host B's next finding id (on its
/// own subject, the only one it may use, with that id as message id and as payload id); B's
/// finding is still stored and acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_preempt_another_hosts_next_finding() {
    let (a, b) = ("intruder", "target");
    let deployment = Deployment::new(&[a, b]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("preempt", deployment, nats.url()).await;
    let victim = marked_binary(stack.dir.path(), "/bin/sleep", "preempt");
    let rule = "e2e-preempt-victim";
    let policy = detection_policy(stack.dir.path(), &[(rule, Severity::High, &victim)]);
    let responder = Responder::start(&stack.responder_config(&kill_policy(rule), QUIET), &[]);
    let stream = wait_stream(&stack.operator.client).await;
    let collector = stack
        .collector(b, "", &["--policy", policy.to_str().unwrap()])
        .await;

    // A shell that waits for a line, then becomes the victim: its next ExecId is known now.
    let mut child = stack
        .cgroup
        .enter(
            Proc::new("/bin/sh")
                .arg("-c")
                .arg(format!("read go; exec {} 600", victim.display()))
                .stdin(Stdio::piped()),
        )
        .spawn()
        .unwrap();
    let shell = collector
        .wait_event("the shell's exec", |e| {
            e.process.pid == child.id() && matches!(e.detail, protocol::EventDetail::Exec(_))
        })
        .await
        .process
        .exec_id;
    let next = protocol::ExecId {
        seq: shell.seq + 1,
        ..shell
    };
    let predicted = FindingId::new(b, &next, Detector::Policy, rule);

    let intruder = stack.deployment.host(&stack.url, a).await;
    let mut forged = synthetic_finding(b, 1, rule, Severity::High);
    forged.id = predicted.clone();
    forged.process.exec_id = next;
    // B's id as message id, a payload claiming to be B's, and one claiming to be A's own.
    publish_finding(&intruder.client, &forged, &predicted.0, a).await;
    let mut as_own = forged.clone();
    as_own.host = a.to_string();
    publish_finding(&intruder.client, &as_own, &format!("{predicted}.x"), a).await;

    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let real = collector
        .wait_finding("B's finding", |f| f.rule_id == rule)
        .await;
    assert_eq!(real.id, predicted, "the intruder had the right id");
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("B's finding is acted on: the victim is killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let stored = stream
        .get_last_raw_message_by_subject(&subject::findings(b, Severity::High))
        .await
        .expect("B's finding is stored on B's subject");
    let stored: protocol::Finding = protocol::decode(&stored.payload).unwrap();
    assert_eq!(stored.id, predicted);
    // The forgery on A's subject was refused for claiming B; A's own claim concerns A only.
    let records = wait_audit(&stack.responder_audit(), PATIENCE, "all decisions", |r| {
        (r.len() >= 3).then(|| r.to_vec())
    })
    .await;
    let about = |host: &str, decision: Decision| {
        records
            .iter()
            .filter(|r| r.finding_id.as_ref() == Some(&predicted) && r.host == host)
            .filter(|r| r.decision == decision)
            .count()
    };
    assert_eq!(about(b, Decision::Refused), 1, "{records:#?}");
    assert_eq!(about(b, Decision::Executed), 1, "{records:#?}");
    assert_eq!(
        about(a, Decision::Failed),
        1,
        "A's own claim goes to A: {records:#?}"
    );
    drop(collector);
    responder.stop();
}

/// Must show 4: the responder is killed (SIGKILL, at a failpoint) after committing a
/// decision and before sending its command — and, for a second finding, after the host
/// answered and before the answer was audited. Restarted, it acts exactly once on each, and
/// each action is audited once by the responder and once by the actuator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_killed_between_deciding_and_auditing_acts_exactly_once() {
    let host = "crash-host";
    let deployment = Deployment::new(&[host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("failpoint", deployment, nats.url()).await;
    let victim = marked_binary(stack.dir.path(), "/bin/sleep", "failpoint");
    let rule = "e2e-failpoint-victim";
    let policy = detection_policy(stack.dir.path(), &[(rule, Severity::High, &victim)]);
    let config = stack.responder_config(&kill_policy(rule), QUIET);
    let collector = {
        // The stream first (a short-lived responder creates it).
        let responder = Responder::start(&config, &[]);
        wait_stream(&stack.operator.client).await;
        responder.stop();
        stack
            .collector(host, "", &["--policy", policy.to_str().unwrap()])
            .await
    };

    for point in ["decided", "sent"] {
        let mut responder = Responder::start_with_env(&config, &[], &[("OSPREY_FAILPOINT", point)]);
        let mut child = stack
            .cgroup
            .enter(Proc::new(&victim).arg("600").stdin(Stdio::null()))
            .spawn()
            .unwrap();
        let finding = collector
            .wait_finding("the victim's finding", |f| f.process.pid == child.id())
            .await;
        let status = responder
            .wait_exit(PATIENCE)
            .unwrap_or_else(|| panic!("the responder reaches the {point} failpoint"));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{point}: {status:?}");
        let audited = |path: &std::path::Path| {
            audit_lines(path)
                .into_iter()
                .filter(|r| r.finding_id.as_ref() == Some(&finding.id))
                .collect::<Vec<_>>()
        };
        assert!(audited(&stack.responder_audit()).is_empty(), "{point}");
        if point == "decided" {
            assert!(child.try_wait().unwrap().is_none(), "nothing was sent");
        }

        let restarted = Responder::start(&config, &[]);
        let status = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{point}: the victim is killed after the restart"));
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let responder_records = wait_audit(
            &stack.responder_audit(),
            PATIENCE,
            "the responder's record",
            |_| {
                let r = audited(&stack.responder_audit());
                (!r.is_empty()).then_some(r)
            },
        )
        .await;
        // Anything repeated would have shown up by now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        restarted.stop();
        let responder_records = {
            let again = audited(&stack.responder_audit());
            assert_eq!(again, responder_records, "{point}: audited once");
            again
        };
        assert_eq!(
            responder_records.len(),
            1,
            "{point}: {responder_records:#?}"
        );
        assert_eq!(responder_records[0].decision, Decision::Executed, "{point}");
        let command_id = responder_records[0].command_id.clone();
        let host_records: Vec<AuditRecord> = audit_lines(&stack.actuator_audit(host))
            .into_iter()
            .filter(|r| r.command_id == command_id)
            .collect();
        assert_eq!(
            host_records.len(),
            1,
            "{point}: executed once: {host_records:#?}"
        );
        assert_eq!(host_records[0].decision, Decision::Executed);
    }
    drop(collector);
}

/// Approved actions count against the rate limits (one beyond is refused as rate limited
/// and audited), the queue of actions awaiting approval is capped (the overflow is refused
/// and audited), pending actions survive a responder restart, and one whose time ran out
/// while the responder was down is audited as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_rate_limited_capped_persisted_and_expire() {
    let host = "approvals-host";
    let rule = "e2e-approval";
    let deployment = Deployment::new(&[host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("approvals", deployment, nats.url()).await;
    let operator = KeyPair::generate().unwrap();
    let operator_key = stack.path("operator.key");
    std::fs::write(&operator_key, operator.secret_base64()).unwrap();
    let policy = format!("approval_required: [kill]\n{}", kill_policy(rule));
    let settings = |timeout: u64, kills: u32| {
        format!(
            "heartbeat_timeout_secs: 0\nrate_limits:\n  kill: {kills}\nmax_pending_approvals: 3\napproval_timeout_secs: {timeout}\noperator_keys: [\"{}\"]\n",
            operator.public_base64()
        )
    };
    let config = stack.responder_config(&policy, &settings(600, 2));
    let mut responder = Responder::start(&config, &[]);
    wait_stream(&stack.operator.client).await;
    let agent = stack.deployment.host(&stack.url, host).await;
    let findings: Vec<_> = (1..=4)
        .map(|n| synthetic_finding(host, n, rule, Severity::High))
        .collect();
    for f in &findings {
        publish_finding(&agent.client, f, &f.id.0, host).await;
    }
    let of = |f: &protocol::Finding, decision: Decision| {
        let id = f.id.clone();
        move |r: &AuditRecord| r.finding_id.as_ref() == Some(&id) && r.decision == decision
    };
    let records = wait_audit(&stack.responder_audit(), PATIENCE, "4 decisions", |r| {
        (r.len() >= 4).then(|| r.to_vec())
    })
    .await;
    let pending: Vec<String> = findings[..3]
        .iter()
        .map(|f| {
            let r = records
                .iter()
                .find(|r| of(f, Decision::AwaitingApproval)(r))
                .unwrap_or_else(|| panic!("{} awaits approval: {records:#?}", f.id));
            r.pending_id.clone().expect("a pending id")
        })
        .collect();
    let overflow = records
        .iter()
        .find(|r| of(&findings[3], Decision::Refused)(r))
        .expect("the fourth is refused");
    assert!(
        overflow.reason.contains("max_pending_approvals"),
        "{}",
        overflow.reason
    );

    // A restart keeps what awaits approval.
    responder.stop();
    responder = Responder::start(&config, &[]);
    // `osprey approve` waits for the restarted responder and prints its answer.
    for (i, id) in pending.iter().enumerate() {
        let out = Proc::new(osprey_tests::bin_dir().join("osprey"))
            .args(["approve", id, "--nats", &stack.url, "--key"])
            .arg(&operator_key)
            .arg("--creds")
            .arg(stack.deployment.operator_creds())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        if i < 2 {
            assert!(out.status.success(), "osprey approve {id}: {said}");
            assert!(said.contains("approved: kill sent"), "{said}");
        } else {
            assert!(!out.status.success(), "the third is over the limit: {said}");
            assert!(said.contains("rate limit"), "{said}");
        }
    }
    let records = wait_audit(&stack.responder_audit(), PATIENCE, "the approvals", |r| {
        r.iter()
            .any(|r| of(&findings[2], Decision::RateLimited)(r))
            .then(|| r.to_vec())
    })
    .await;
    for f in &findings[..2] {
        assert!(
            records.iter().any(of(f, Decision::Approved)),
            "{records:#?}"
        );
        // Sent: no actuator runs for this host, so the send fails, but it was sent.
        let sent = records.iter().find(|r| of(f, Decision::Failed)(r)).unwrap();
        assert!(sent.result.contains("no actuator"), "{}", sent.result);
    }
    let limited = records
        .iter()
        .find(|r| of(&findings[2], Decision::RateLimited)(r))
        .unwrap();
    assert_eq!(limited.pending_id.as_ref(), Some(&pending[2]));
    assert!(limited.reason.contains("rate limit"), "{}", limited.reason);
    assert!(!records.iter().any(of(&findings[2], Decision::Approved)));

    // Expiry while the responder is down (with room under the rate limit).
    responder.stop();
    let config = stack.responder_config(&policy, &settings(2, 10));
    responder = Responder::start(&config, &[]);
    let late = synthetic_finding(host, 5, rule, Severity::High);
    publish_finding(&agent.client, &late, &late.id.0, host).await;
    let awaiting = wait_audit(&stack.responder_audit(), PATIENCE, "the fifth", |r| {
        r.iter()
            .find(|r| of(&late, Decision::AwaitingApproval)(r))
            .cloned()
    })
    .await;
    responder.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let responder = Responder::start(&config, &[]);
    let expired = wait_audit(&stack.responder_audit(), PATIENCE, "the expiry", |r| {
        r.iter().find(|r| of(&late, Decision::Expired)(r)).cloned()
    })
    .await;
    assert_eq!(expired.pending_id, awaiting.pending_id);
    responder.stop();
}

/// A command the host does not answer in time is audited `unknown`; the host's own audit
/// record of it, arriving later on its subject, is reconciled into the responder's trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_command_is_audited_unknown_then_reconciled() {
    let host = "slow-host";
    let rule = "e2e-slow";
    let deployment = Deployment::new(&[host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("unknown", deployment, nats.url()).await;
    let config = stack.responder_config(
        &kill_policy(rule),
        &format!("{QUIET}command_timeout_secs: 1\n"),
    );
    let responder = Responder::start(&config, &[]);
    wait_stream(&stack.operator.client).await;
    // A slow actuator: answers after two seconds, auditing on its own subject first.
    let agent = stack.deployment.host(&stack.url, host).await;
    let mut commands = agent
        .client
        .subscribe(subject::command(host))
        .await
        .unwrap();
    agent.client.flush().await.unwrap();
    let client = agent.client.clone();
    tokio::spawn(async move {
        while let Some(m) = commands.next().await {
            let command: Command = protocol::decode(&m.payload).unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut record = AuditRecord::new(
                "actuator",
                host,
                command.action.name(),
                Decision::Executed,
                "signal 9 sent",
                "ok",
            );
            record.command_id = Some(command.id.clone());
            client
                .publish(
                    subject::audit(host),
                    protocol::encode(&record).unwrap().into(),
                )
                .await
                .unwrap();
            if let Some(reply) = m.reply {
                let result = CommandResult {
                    command_id: command.id,
                    host: host.into(),
                    status: CommandStatus::Ok,
                    reason: "signal 9 sent".into(),
                    output: None,
                    time: Timestamp::now(),
                };
                let _ = client
                    .publish(reply, protocol::encode(&result).unwrap().into())
                    .await;
            }
        }
    });
    let finding = synthetic_finding(host, 1, rule, Severity::High);
    publish_finding(&agent.client, &finding, &finding.id.0, host).await;
    let mine = |r: &AuditRecord| r.finding_id.as_ref() == Some(&finding.id);
    let records = wait_audit(
        &stack.responder_audit(),
        PATIENCE,
        "unknown, then reconciled",
        |r| (r.iter().filter(|r| mine(r)).count() >= 2).then(|| r.to_vec()),
    )
    .await;
    let mine: Vec<&AuditRecord> = records.iter().filter(|r| mine(r)).collect();
    assert_eq!(mine[0].decision, Decision::Unknown, "{mine:#?}");
    assert_eq!(mine[1].decision, Decision::Executed, "{mine:#?}");
    assert!(mine[1].reason.contains("reconciled"), "{}", mine[1].reason);
    assert_eq!(mine[0].command_id, mine[1].command_id);
    responder.stop();
}
