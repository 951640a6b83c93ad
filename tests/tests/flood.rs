//! An event flood does not crowd out heartbeats: heartbeats have a queue of their own that
//! the publisher serves first, so the responder never takes a flooded host for a silent one.
//! 50,000 events a second, and twice the server stops reading for 1.5 s in the middle of it:
//! events that do not fit are dropped and counted, heartbeats all arrive.
//!
//! Real kernel events at 50,000/s are out of reach of this 2-core machine (the sensor, the
//! collector and the workload would share two cores), so the test drives the collector's
//! real publisher (`collector::publish::Publisher`, the code the pipeline hands every event
//! and heartbeat to) at that rate, in process, against the shipped deployment (deploy/nats,
//! the host's own credentials) and the real responder watching heartbeats.

use std::time::{Duration, Instant};

use collector::publish::{NatsConfig, Publisher, PublisherConfig, SpoolConfig};
use futures::StreamExt;
use osprey_tests::{
    deployed::{audit_lines, wait_stream, Stack},
    nats::{Deployment, NatsServer},
    responder::Responder,
};
use protocol::{
    subject, BootId, Event, EventDetail, ExecEvent, ExecId, Heartbeat, Process, Timestamp,
};

const RATE: u64 = 50_000;
/// Seconds into the flood at which the server stops reading for [`STALL`]: the client's
/// buffers fill, the event queue overflows (events dropped, counted) and the next heartbeat
/// is queued while it is full — a shared queue would drop it.
const STALLS: [u64; 2] = [3, 6];
const STALL: Duration = Duration::from_millis(1500);
const SECONDS: u64 = 10;
/// The responder calls a host silent after this long without a heartbeat.
const SILENCE_SECS: u64 = 3;

fn event(host: &str, n: u64) -> Event {
    let exec_id = ExecId {
        boot: BootId(0xf100d),
        pid: 1000 + (n % 30_000) as u32,
        start_ticks: n,
        seq: 1,
    };
    Event {
        time: Timestamp::now(),
        host: host.to_string(),
        process: Process {
            ppid: 1,
            uid: 1000,
            euid: 1000,
            start_time: Timestamp::now(),
            ..Process::new(
                exec_id,
                "/usr/bin/curl",
                vec![
                    "curl".into(),
                    "-s".into(),
                    format!("https://example.com/item/{n}"),
                ],
            )
        },
        ancestry: Vec::new(),
        detail: EventDetail::Exec(ExecEvent::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_flood_of_50000_per_second_does_not_drop_a_heartbeat() {
    let host = "flood-host";
    let deployment = Deployment::new(&[host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("flood", deployment, nats.url()).await;
    let operator = &stack.operator.client;
    let mut heartbeats = operator.subscribe(subject::heartbeat(host)).await.unwrap();
    let mut silent = operator
        .subscribe(format!("osprey.findings.{}.>", subject::host_token(host)))
        .await
        .unwrap();
    operator.flush().await.unwrap();
    let responder = Responder::start(
        &stack.responder_config(
            "rules: []\n",
            &format!("heartbeat_timeout_secs: {SILENCE_SECS}\n"),
        ),
        &[],
    );
    wait_stream(operator).await;

    let (publisher, task) = Publisher::start(PublisherConfig {
        host: host.to_string(),
        nats: Some(NatsConfig {
            credentials: Some(stack.deployment.host_creds(host)),
            ..NatsConfig::new(stack.url.clone())
        }),
        publish_events: true,
        jsonl: None,
        spool: SpoolConfig {
            dir: stack.spool(host),
            max_bytes: 1 << 20,
            max_findings: 100,
            fsync: false,
        },
    })
    .await
    .unwrap();
    // Connected: the first heartbeat arrives.
    let beat = |n: u64| Heartbeat {
        host: host.to_string(),
        time: Timestamp::now(),
        version: "flood".into(),
        uptime_secs: n,
        ..Default::default()
    };
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            publisher.heartbeat(&beat(0));
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), heartbeats.next()).await
            {
                break m;
            }
        }
    })
    .await
    .expect("the publisher connects");
    drop(first);
    let before = publisher.stats();

    // The flood: RATE events a second, paced every millisecond; a heartbeat every second.
    let start = Instant::now();
    let mut sent = 0u64;
    let mut beats = 0u64;
    let mut elapsed = 0.0;
    let mut stalled_since = None;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        let due = (start.elapsed().as_secs_f64() * RATE as f64) as u64;
        while sent < due {
            publisher.event(&event(host, sent));
            sent += 1;
        }
        elapsed = start.elapsed().as_secs_f64();
        if start.elapsed() >= Duration::from_secs(beats + 1) {
            beats += 1;
            publisher.heartbeat(&beat(beats));
        }
        let now = start.elapsed();
        match stalled_since {
            None if STALLS.iter().any(|s| {
                now >= Duration::from_secs(*s) && now < Duration::from_secs(*s) + STALL
            }) =>
            {
                nats.pause();
                stalled_since = Some(now);
            }
            Some(since) if now >= since + STALL => {
                nats.resume();
                stalled_since = None;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    nats.resume();
    // Past the silence timeout, so a silence would have been reported.
    for extra in 1..=SILENCE_SECS + 1 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        publisher.heartbeat(&beat(beats + extra));
    }
    // The responder never took the host for silent (asked while heartbeats still flow).
    let mut silences = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), silent.next()).await {
        let f: protocol::Finding = protocol::decode(&m.payload).unwrap();
        if f.rule_id == "osprey.host-silent" {
            silences += 1;
        }
    }
    responder.stop();
    assert_eq!(silences, 0, "no host-silent finding");
    assert!(audit_lines(&stack.responder_audit()).is_empty());
    let stats = task.shutdown(Duration::from_secs(10)).await;

    let mut received = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), heartbeats.next()).await {
        let h: Heartbeat = protocol::decode(&m.payload).unwrap();
        received.push(h.uptime_secs);
    }
    let events = stats.events_published - before.events_published;
    let dropped = stats.events_dropped - before.events_dropped;
    eprintln!(
        "flood: {sent} events in {elapsed:.1}s ({:.0}/s offered), {events} published, {dropped} dropped (counted); {} heartbeats sent, {} received",
        sent as f64 / elapsed,
        beats + SILENCE_SECS + 1,
        received.len()
    );
    assert!(
        sent as f64 / elapsed >= RATE as f64 * 0.9,
        "the test offered {:.0} events/s",
        sent as f64 / elapsed
    );
    assert_eq!(events + dropped, sent, "every event published or counted");
    assert!(dropped > 0, "the stalls overflowed the event queue");
    assert_eq!(
        stats.heartbeats_dropped - before.heartbeats_dropped,
        0,
        "no heartbeat dropped during the flood"
    );
    assert_eq!(
        received,
        (1..=beats + SILENCE_SECS + 1).collect::<Vec<_>>(),
        "every heartbeat arrived, in order"
    );
}
