//! The publisher against a real nats-server: JetStream delivery, outages at start and
//! mid-run, spool persistence across restarts, and core NATS events and heartbeats.
#![cfg(target_os = "linux")]

use std::{path::Path, time::Duration};

use async_nats::jetstream::{self, consumer, stream};
use collector::publish::{
    NatsConfig, Publisher, PublisherConfig, PublisherStats, PublisherTask, SpoolConfig,
};
use futures::StreamExt;
use osprey_tests::nats::NatsServer;
use protocol::*;

/// A host name that is not already a NATS token, so subjects must go through host_token.
const HOST: &str = "test-host.example";
/// Generous bound for things that depend on reconnect backoff; tests fail, not hang.
const PATIENCE: Duration = Duration::from_secs(90);

fn process(pid: u32) -> Process {
    Process {
        ppid: 1,
        invoked_path: Some("/usr/bin/python3".into()),
        cwd: Some("/tmp".into()),
        uid: 1000,
        euid: 1000,
        gid: 1000,
        cgroup_id: 1,
        start_time: Timestamp::from_unix_nanos(1),
        ..Process::new(
            ExecId {
                boot: BootId(0xabcd),
                pid,
                start_ticks: 1000 + u64::from(pid),
                seq: 0,
            },
            "/usr/bin/python3",
            vec!["python3".into(), "-c".into(), format!("print({pid})")],
        )
    }
}

/// Finding number `n`: distinct id, severities cycling so findings span several subjects.
fn finding(n: u32) -> Finding {
    let process = process(n);
    let rule_id = format!("test-rule-{n}");
    Finding {
        id: FindingId::new(HOST, &process.exec_id, Detector::Policy, &rule_id),
        time: Timestamp::from_unix_nanos(i64::from(n)),
        host: HOST.into(),
        detector: Detector::Policy,
        rule_id,
        title: format!("test finding {n}"),
        description: None,
        author: None,
        severity: Severity::ALL[n as usize % Severity::ALL.len()],
        tags: vec!["attack.execution".into()],
        process,
        ancestry: vec![],
        triggers: vec![],
        recommended_actions: vec![ActionKind::Notify],
    }
}

fn config(url: &str, spool: &Path) -> PublisherConfig {
    PublisherConfig {
        host: HOST.into(),
        nats: Some(NatsConfig::new(url)),
        publish_events: true,
        jsonl: None,
        spool: SpoolConfig {
            dir: spool.to_path_buf(),
            max_bytes: 64 << 20,
            max_findings: 10_000,
            fsync: false,
        },
    }
}

/// Logs (`RUST_LOG=collector=debug`) help when a test fails; off by default.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn wait_for(publisher: &Publisher, what: &str, done: impl Fn(&PublisherStats) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats = publisher.stats();
        if done(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_spool_empty(publisher: &Publisher) {
    wait_for(publisher, "the spool to empty", |s| s.spool_depth == 0).await;
}

struct Stored {
    subject: String,
    msg_id: Option<String>,
    finding: Finding,
}

/// Everything in `OSPREY_FINDINGS`, in stream order, read through a JetStream consumer.
async fn stored_findings(url: &str) -> Vec<Stored> {
    let client = async_nats::connect(url)
        .await
        .expect("test client connects");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(subject::FINDINGS_STREAM)
        .await
        .expect("the publisher created the stream");
    let total = stream.info().await.expect("stream info").state.messages as usize;
    let reader = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(format!("test-reader-{}", std::process::id())),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("create a reader consumer");
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut batch = reader
            .fetch()
            .max_messages(total - out.len())
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch from the reader consumer");
        let before = out.len();
        while let Some(message) = batch.next().await {
            let message = message.expect("a stored message");
            out.push(Stored {
                subject: message.subject.to_string(),
                msg_id: message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_string()),
                finding: decode(&message.payload).expect("payload is an encoded Finding"),
            });
        }
        assert!(
            out.len() > before,
            "consumer stopped at {} of {total}",
            out.len()
        );
    }
    out
}

fn ids(stored: &[Stored]) -> Vec<String> {
    stored.iter().map(|s| s.finding.id.0.clone()).collect()
}

fn expected_ids(numbers: impl IntoIterator<Item = u32>) -> Vec<String> {
    numbers.into_iter().map(|n| finding(n).id.0).collect()
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".finding"))
                .count()
        })
        .unwrap_or(0)
}

async fn stop(task: PublisherTask) -> PublisherStats {
    task.shutdown(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_reach_jetstream_with_their_subject_and_msg_id() {
    init_logs();
    let server = NatsServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    for n in 0..5 {
        publisher.finding(&finding(n));
    }
    wait_spool_empty(&publisher).await;

    let stored = stored_findings(&server.url()).await;
    assert_eq!(stored.len(), 5);
    for (n, stored) in (0..5).zip(&stored) {
        let sent = finding(n);
        assert_eq!(
            stored.subject,
            format!("osprey.findings.test-host_2eexample.{}", sent.severity)
        );
        // The finding id, then this host's keyed tag (no other host can produce it).
        let msg_id = stored.msg_id.as_deref().unwrap();
        let tag = msg_id.strip_prefix(&format!("{}.", sent.id)).unwrap();
        assert_eq!(tag.len(), 32, "{msg_id}");
        assert_eq!(stored.finding, sent);
    }

    let client = async_nats::connect(server.url()).await.unwrap();
    let info = jetstream::new(client)
        .get_stream(subject::FINDINGS_STREAM)
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.subjects, vec!["osprey.findings.>".to_string()]);
    assert_eq!(info.config.storage, stream::StorageType::File);
    assert_eq!(
        info.config.duplicate_window,
        bus::FindingsStream::DEFAULT_DUPLICATE_WINDOW
    );
    assert_eq!(
        info.config.max_messages_per_subject,
        bus::FindingsStream::DEFAULT_MAX_MESSAGES_PER_SUBJECT
    );
    assert_eq!((info.config.max_messages, info.config.max_bytes), (-1, -1));

    let stats = stop(task).await;
    assert_eq!(stats.findings_published, 5);
    assert_eq!(spool_files(spool.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_spooled_while_nats_is_down_at_start_arrive_in_order_once() {
    init_logs();
    let mut server = NatsServer::prepare();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .expect("starting does not need NATS");
    for n in 0..25 {
        publisher.finding(&finding(n));
    }
    let stats = publisher.stats();
    assert!(stats.spool_depth > 0, "{stats:?}");
    assert_eq!((stats.spool_depth, stats.findings_published), (25, 0));
    assert_eq!(spool_files(spool.path()), 25);

    server.run();
    wait_spool_empty(&publisher).await;

    let stored = stored_findings(&server.url()).await;
    assert_eq!(ids(&stored), expected_ids(0..25));
    let stats = stop(task).await;
    assert_eq!((stats.findings_published, stats.spool_evicted), (25, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_spooled_during_an_outage_arrive_in_order_once_after_restart() {
    init_logs();
    let mut server = NatsServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    for n in 0..5 {
        publisher.finding(&finding(n));
    }
    wait_spool_empty(&publisher).await;

    server.kill();
    for n in 5..30 {
        publisher.finding(&finding(n));
    }
    // Nothing can be acknowledged while the server is dead.
    assert_eq!(publisher.stats().spool_depth, 25);

    server.run();
    wait_spool_empty(&publisher).await;

    let stored = stored_findings(&server.url()).await;
    assert_eq!(ids(&stored), expected_ids(0..30));
    stop(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_delivers_the_previous_spool_first() {
    init_logs();
    let mut server = NatsServer::prepare();
    let spool = tempfile::tempdir().unwrap();
    let (first, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    for n in 0..3 {
        first.finding(&finding(n));
    }
    let stats = task.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.spool_depth, 3);
    drop(first);

    server.run();
    let (second, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    assert_eq!(second.stats().spool_depth, 3);
    for n in 3..5 {
        second.finding(&finding(n));
    }
    wait_spool_empty(&second).await;
    assert_eq!(
        ids(&stored_findings(&server.url()).await),
        expected_ids(0..5)
    );
    stop(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_that_passes_the_check_is_left_as_it_is() {
    init_logs();
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: subject::FINDINGS_STREAM.into(),
        subjects: vec![subject::FINDINGS_WILDCARD.into()],
        description: Some("made by the operator".into()),
        max_messages_per_subject: 1000,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(300),
        ..Default::default()
    })
    .await
    .unwrap();

    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    publisher.finding(&finding(1));
    wait_spool_empty(&publisher).await;
    stop(task).await;

    let mut stream = js.get_stream(subject::FINDINGS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.config.description.as_deref(),
        Some("made by the operator")
    );
    assert_eq!(info.config.max_messages_per_subject, 1000);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(300));
    assert_eq!(info.state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_stream_is_refused_and_findings_stay_spooled() {
    init_logs();
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    // Work-queue retention would delete each finding once the responder has it.
    js.create_stream(stream::Config {
        name: subject::FINDINGS_STREAM.into(),
        subjects: vec![subject::FINDINGS_WILDCARD.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages_per_subject: 1000,
        ..Default::default()
    })
    .await
    .unwrap();

    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    for n in 0..3 {
        publisher.finding(&finding(n));
    }
    // Several delivery attempts (the backoff starts at 100 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(publisher.stats().spool_depth, 3);
    let mut stream = js.get_stream(subject::FINDINGS_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);

    // Fixed by its owner: the spool drains into the right stream.
    js.delete_stream(subject::FINDINGS_STREAM).await.unwrap();
    wait_spool_empty(&publisher).await;
    assert_eq!(
        ids(&stored_findings(&server.url()).await),
        expected_ids(0..3)
    );
    stop(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_heartbeats_go_out_on_core_nats() {
    init_logs();
    let server = NatsServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    // A delivered finding proves the publisher's connection is up: core publishes made
    // before that are dropped (and counted), by design.
    publisher.finding(&finding(0));
    wait_spool_empty(&publisher).await;

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut events = client
        .subscribe("osprey.events.test-host_2eexample.>")
        .await
        .unwrap();
    let mut heartbeats = client
        .subscribe("osprey.heartbeat.test-host_2eexample")
        .await
        .unwrap();
    client.flush().await.unwrap();

    let event = Event {
        time: Timestamp::from_unix_nanos(7),
        host: HOST.into(),
        process: process(7),
        ancestry: vec![],
        detail: EventDetail::Connect(ConnectEvent {
            family: SocketFamily::Ipv4,
            protocol: TransportProtocol::Tcp,
            destination_ip: "192.0.2.1".parse().unwrap(),
            destination_port: 443,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Ok,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: false,
        }),
    };
    let heartbeat = Heartbeat {
        host: HOST.into(),
        version: "test".into(),
        protocol_version: PROTOCOL_VERSION,
        spool_depth: 0,
        ..Default::default()
    };
    publisher.event(&event);
    publisher.heartbeat(&heartbeat);

    let got = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event arrives")
        .expect("subscription open");
    assert_eq!(
        got.subject.as_str(),
        "osprey.events.test-host_2eexample.connect"
    );
    assert_eq!(decode::<Event>(&got.payload).unwrap(), event);
    let got = tokio::time::timeout(PATIENCE, heartbeats.next())
        .await
        .expect("a heartbeat arrives")
        .expect("subscription open");
    assert_eq!(decode::<Heartbeat>(&got.payload).unwrap(), heartbeat);

    let stats = stop(task).await;
    assert_eq!((stats.events_published, stats.events_dropped), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_while_nats_is_away_are_counted_as_dropped() {
    init_logs();
    let server = NatsServer::prepare();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    let event = Event {
        time: Timestamp::from_unix_nanos(8),
        host: HOST.into(),
        process: process(8),
        ancestry: vec![],
        detail: EventDetail::Exec(ExecEvent::default()),
    };
    for _ in 0..3 {
        publisher.event(&event);
    }
    wait_for(&publisher, "3 dropped events", |s| s.events_dropped == 3).await;
    let stats = stop(task).await;
    assert_eq!((stats.events_published, stats.events_dropped), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_over_max_payload_is_set_aside_without_blocking_the_rest() {
    init_logs();
    let server = NatsServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (publisher, task) = Publisher::start(config(&server.url(), spool.path()))
        .await
        .unwrap();
    let mut huge = finding(1);
    // nats-server's default max_payload is 1 MiB.
    huge.process.argv = vec!["x".repeat(2 << 20)];
    publisher.finding(&finding(0));
    publisher.finding(&huge);
    publisher.finding(&finding(2));
    wait_spool_empty(&publisher).await;

    assert_eq!(
        ids(&stored_findings(&server.url()).await),
        expected_ids([0, 2])
    );
    let stats = stop(task).await;
    assert_eq!((stats.findings_published, stats.findings_failed), (2, 1));
    let unsent = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".finding.unsent"))
        .count();
    assert_eq!(unsent, 1);
}
