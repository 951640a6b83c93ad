//! Osprey on a 3-node JetStream cluster (deploy/nats/cluster, routed on loopback, each node
//! with its own store): the findings stream is kept on all three (R3); losing the stream
//! leader in the middle of a flow of findings loses nothing, doubles nothing and keeps each
//! host's order, and the responder keeps acting; losing a second node (no quorum) stops
//! publishing — findings wait in the collector's spool — until a node returns.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use osprey_tests::{
    deployed::{
        audit_lines, detection_policy, index_of, marked_binary, run_each, stored_findings,
        wait_stream, Stack,
    },
    eventually,
    nats::{Deployment, NatsCluster},
    responder::Responder,
};
use protocol::{subject, Decision, Severity};

const FLOW: usize = 1000;
/// The collector sees the whole machine: only the test's rule raises findings.
const NO_HEURISTICS: &str = "heuristics:\n  enabled: false\n";
const AFTER_QUORUM_LOSS: usize = 50;

/// Waits until the cluster's JetStream answers API requests (a meta leader is elected): a
/// lookup of the (not yet created) findings stream gets "not found" rather than no answer.
async fn wait_jetstream(client: &async_nats::Client) {
    use async_nats::jetstream::context::GetStreamErrorKind;
    let js = jetstream::new(client.clone());
    for _ in 0..300 {
        match js.get_stream(subject::FINDINGS_STREAM).await {
            Ok(_) => return,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                return
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("JetStream of the cluster did not answer within 30 s");
}

/// Must show 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_survives_losing_its_stream_leader_and_waits_out_a_lost_quorum() {
    let host = "cluster-host";
    let rule = "e2e-cluster";
    let deployment = Deployment::new(&[host]);
    let mut cluster = NatsCluster::start(&deployment, 3);
    let stack = Stack::new("cluster", deployment, cluster.urls()).await;
    wait_jetstream(&stack.operator.client).await;
    let policy = format!(
        "rules:\n  - name: log-{rule}\n    match:\n      rule_ids: [{rule}]\n    actions: [log]\n"
    );
    let responder = Responder::start(
        &stack.responder_config(&policy, "heartbeat_timeout_secs: 0\n"),
        &[],
    );
    let mut stream = wait_stream(&stack.operator.client).await;
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3, "R3 on a 3-node cluster");

    let program = marked_binary(stack.dir.path(), "/bin/true", "cluster");
    let detection = detection_policy(stack.dir.path(), &[(rule, Severity::Medium, &program)]);
    let collector = stack
        .collector(
            host,
            NO_HEURISTICS,
            &["--policy", detection.to_str().unwrap(), "--no-events"],
        )
        .await;
    let filter = format!("osprey.findings.{}.>", subject::host_token(host));
    let acted = |n: usize| {
        let records = audit_lines(&stack.responder_audit());
        (records
            .iter()
            .filter(|r| r.action == "log" && r.decision == Decision::Executed)
            .count()
            >= n)
            .then_some(())
    };

    // The flow; the stream leader dies a third of the way through.
    run_each(&stack.cgroup, &program, 0..FLOW / 3);
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let killed_at = Instant::now();
    cluster.node(&leader).kill();
    run_each(&stack.cgroup, &program, FLOW / 3..FLOW);
    let published = eventually(Duration::from_secs(90), || {
        collector
            .last_heartbeat()
            .filter(|h| h.spool_depth == 0 && h.findings >= FLOW as u64)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the flow is delivered despite the leader's loss; last heartbeat {:#?}\n{}",
            collector.last_heartbeat(),
            cluster.logs()
        )
    });
    let delivered_after = killed_at.elapsed();
    assert_eq!(published.findings_failed, 0);
    let stored = stored_findings(&stack.operator.client, &filter).await;
    let indexes: Vec<usize> = stored
        .iter()
        .filter(|s| s.finding.rule_id == rule)
        .filter_map(|s| index_of(&s.finding))
        .collect();
    assert_eq!(
        indexes,
        (0..FLOW).collect::<Vec<_>>(),
        "every finding once, in order"
    );
    eventually(Duration::from_secs(60), || acted(FLOW))
        .await
        .expect("the responder acted on every finding");
    // The longest pause in storing while the leader was replaced.
    let gap = stored
        .windows(2)
        .map(|w| w[1].stored_at - w[0].stored_at)
        .max()
        .unwrap_or(0);
    let new_leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    eprintln!(
        "cluster: stream leader {leader} killed; new leader {new_leader}; longest pause in storing {:.2}s; the flow's last {} findings were all stored {:.1}s after the kill",
        gap as f64 / 1e9,
        FLOW - FLOW / 3,
        delivered_after.as_secs_f64()
    );

    // A second node down: no quorum, findings wait in the spool.
    let second = cluster
        .nodes
        .iter()
        .find(|n| n.is_running() && n.name() != new_leader)
        .map(|n| n.name().to_string())
        .expect("a second running node");
    cluster.node(&second).kill();
    run_each(&stack.cgroup, &program, FLOW..FLOW + AFTER_QUORUM_LOSS);
    let waiting = eventually(Duration::from_secs(30), || {
        collector
            .last_heartbeat()
            .filter(|h| h.spool_depth == AFTER_QUORUM_LOSS as u64)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "findings wait in the spool without quorum; last heartbeat {:#?}",
            collector.last_heartbeat()
        )
    });
    // Still there a while later: nothing was accepted without quorum.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        collector.last_heartbeat().map(|h| h.spool_depth),
        Some(waiting.spool_depth)
    );

    let returned_at = Instant::now();
    cluster.node(&leader).run();
    eventually(Duration::from_secs(90), || {
        collector.last_heartbeat().filter(|h| h.spool_depth == 0)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the spool drains once a node is back; last heartbeat {:#?}\n{}",
            collector.last_heartbeat(),
            cluster.logs()
        )
    });
    eprintln!(
        "cluster: quorum back; {AFTER_QUORUM_LOSS} spooled findings delivered {:.1}s after the node returned",
        returned_at.elapsed().as_secs_f64()
    );
    let stored = stored_findings(&stack.operator.client, &filter).await;
    let indexes: Vec<usize> = stored
        .iter()
        .filter(|s| s.finding.rule_id == rule)
        .filter_map(|s| index_of(&s.finding))
        .collect();
    assert_eq!(
        indexes,
        (0..FLOW + AFTER_QUORUM_LOSS).collect::<Vec<_>>(),
        "every finding once, in order, after the quorum came back"
    );
    eventually(Duration::from_secs(60), || acted(FLOW + AFTER_QUORUM_LOSS))
        .await
        .expect("the responder acts on the findings that waited");
    drop(collector);
    responder.stop();
}
