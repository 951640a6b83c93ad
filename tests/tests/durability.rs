//! Nothing is lost while NATS is away, even when the spool overflows: the spool evicts the
//! lowest severity first, so every critical finding arrives, and the evictions are counted
//! per severity in the heartbeat. On the shipped deployment (deploy/nats).

use std::time::Duration;

use osprey_tests::{
    deployed::{
        detection_policy, index_of, marked_binary, run_each, stored_findings, wait_stream, Stack,
    },
    eventually,
    nats::{Deployment, NatsServer},
    responder::Responder,
};
use protocol::Severity;

/// Must show 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_a_full_spool_keeps_every_critical_and_counts_evictions_by_severity() {
    let host = "spool-host";
    let deployment = Deployment::new(&[host]);
    let mut nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("spool", deployment, nats.url()).await;
    {
        // The responder creates the stream (hosts may not), then is not needed.
        let responder = Responder::start(
            &stack.responder_config("rules: []\n", "heartbeat_timeout_secs: 0\n"),
            &[],
        );
        wait_stream(&stack.operator.client).await;
        responder.stop();
    }
    let medium = marked_binary(stack.dir.path(), "/bin/true", "medium");
    let critical = marked_binary(stack.dir.path(), "/bin/true", "critical");
    let policy = detection_policy(
        stack.dir.path(),
        &[
            ("e2e-spool-medium", Severity::Medium, &medium),
            ("e2e-spool-critical", Severity::Critical, &critical),
        ],
    );
    let collector = stack
        .collector(
            host,
            // The collector sees the whole machine: only the test's rules raise findings.
            "spool:\n  max_findings: 50\nheuristics:\n  enabled: false\n",
            &["--policy", policy.to_str().unwrap(), "--no-events"],
        )
        .await;

    nats.kill();
    run_each(&stack.cgroup, &medium, 0..200);
    run_each(&stack.cgroup, &critical, 0..5);
    let spooled = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".finding"))
                    .count()
            })
            .unwrap_or(0)
    };
    let spool = stack.spool(host);
    // The last of the 205 (a critical) is spooled, the spool holds its bound.
    eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&spool)
            .ok()?
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with("-critical.finding")
            })
            .then_some(())
    })
    .await
    .expect("the criticals reach the spool");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spooled(&spool), 50, "the spool stays within its bound");

    nats.run();
    let heartbeat = eventually(Duration::from_secs(60), || {
        collector.last_heartbeat().filter(|h| {
            h.spool_depth == 0 && h.spool_evicted_by_severity.get("medium") == Some(&155)
        })
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the spool drains; last heartbeat {:#?}",
            collector.last_heartbeat()
        )
    });
    assert_eq!(heartbeat.spool_evicted, 155);
    assert_eq!(
        heartbeat
            .spool_evicted_by_severity
            .keys()
            .collect::<Vec<_>>(),
        ["medium"],
        "only mediums were evicted"
    );
    assert!(
        heartbeat.heartbeats_dropped > 0,
        "heartbeats during the outage are counted"
    );
    assert_eq!(
        (heartbeat.findings_failed, heartbeat.spool_write_errors),
        (0, 0)
    );

    let stored = stored_findings(
        &stack.operator.client,
        &format!("osprey.findings.{}.>", protocol::subject::host_token(host)),
    )
    .await;
    let of = |rule: &str| {
        stored
            .iter()
            .filter(|s| s.finding.rule_id == rule)
            .filter_map(|s| index_of(&s.finding))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("e2e-spool-critical"),
        (0..5).collect::<Vec<_>>(),
        "every critical, in order"
    );
    assert_eq!(
        of("e2e-spool-medium"),
        (155..200).collect::<Vec<_>>(),
        "the newest mediums, in order"
    );
    drop(collector);
}
