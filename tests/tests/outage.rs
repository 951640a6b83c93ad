//! NATS down while findings are raised: they wait in the spool and all arrive, in order,
//! once when it is back.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use osprey_tests::{collector::Collector, eventually, marker, nats::NatsServer};
use protocol::Finding;

const FINDINGS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_raised_while_nats_is_down_arrive_in_order_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut nats = NatsServer::start();
    let client = nats.client().await;
    let collector = Collector::start(&client, &nats.url(), &spool, &[]).await;

    nats.kill();
    let mark = marker("outage");
    // Each a distinct process, so a distinct finding: a script engine with no terminal.
    for i in 0..FINDINGS {
        let status = std::process::Command::new("setsid")
            .args([
                "--wait",
                "/usr/bin/python3",
                "-c",
                &format!("# {mark} {i:03}"),
            ])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let spooled = eventually(Duration::from_secs(20), || {
        let n = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
        (n >= FINDINGS).then_some(n)
    })
    .await;
    assert!(
        spooled.is_some(),
        "findings must wait in the spool while NATS is down"
    );

    nats.run();
    let client = nats.client().await;
    let js = jetstream::new(client);
    let stream = eventually_stream(&js).await;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            filter_subject: format!("osprey.findings.{}.>", collector.host),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut mine: Vec<Finding> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mine.len() < FINDINGS && tokio::time::Instant::now() < deadline {
        fetch_mine(&consumer, &mark, &mut mine).await;
    }
    // Wait a little longer: a duplicate would arrive now if it were sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fetch_mine(&consumer, &mark, &mut mine).await;
    let indexes: Vec<usize> = mine
        .iter()
        .map(|f| {
            let arg = f.process.argv.iter().find(|a| a.contains(&mark)).unwrap();
            arg.rsplit(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        indexes,
        (0..FINDINGS).collect::<Vec<_>>(),
        "all, in order, none twice"
    );
    drop(collector);
}

/// Fetches what the consumer has (waiting up to 1 s), acks it, and keeps this test's findings.
async fn fetch_mine(
    consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    mark: &str,
    mine: &mut Vec<Finding>,
) {
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(m)) = batch.next().await {
        let f: Finding = protocol::decode(&m.payload).unwrap();
        if f.process.argv.iter().any(|a| a.contains(mark)) {
            mine.push(f);
        }
        m.ack().await.unwrap();
    }
}

async fn eventually_stream(js: &jetstream::Context) -> jetstream::stream::Stream {
    for _ in 0..100 {
        if let Ok(s) = js.get_stream(protocol::subject::FINDINGS_STREAM).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stream {} does not exist",
        protocol::subject::FINDINGS_STREAM
    );
}
