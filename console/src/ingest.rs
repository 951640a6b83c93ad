//! What the console reads from NATS: findings through a durable JetStream consumer (a finding
//! is acknowledged only once it is in the database, so a console that stops mid-stream gets
//! the rest when it returns, and stores each finding once), heartbeats and audit records
//! (core subscriptions), and optionally every event. Plus the retention loop.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use protocol::{subject, AuditRecord, Event, Finding, Heartbeat, Timestamp};

use crate::{
    app::Shared,
    store::{audit, findings, hosts, retention, used_bytes},
};

const RETRY: Duration = Duration::from_secs(2);

/// Starts every ingest task and the retention loop.
pub fn spawn(app: Shared) {
    tokio::spawn(findings_loop(app.clone()));
    tokio::spawn(heartbeats(app.clone()));
    tokio::spawn(audit_records(app.clone()));
    if app.config.store_events {
        tokio::spawn(events(app.clone()));
    }
    tokio::spawn(retention_loop(app));
}

/// The `<host>` token of `osprey.<kind>.<host>[...]`.
fn host_token(subject: &str) -> Option<&str> {
    subject.split('.').nth(2)
}

async fn findings_loop(app: Shared) {
    loop {
        match consume_findings(&app).await {
            Ok(()) => tracing::warn!("the findings consumer ended; reopening it"),
            Err(e) => tracing::warn!("findings consumer: {e:#}; retrying in {RETRY:?}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn consume_findings(app: &Shared) -> anyhow::Result<()> {
    let stream = client::findings_stream(&app.nats).await?;
    let consumer = stream
        .get_or_create_consumer(
            &app.config.consumer,
            pull::Config {
                durable_name: Some(app.config.consumer.clone()),
                filter_subject: subject::FINDINGS_WILDCARD.to_string(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_wait: Duration::from_secs(15),
                description: Some("osprey-console".into()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the durable consumer {}: {e}",
                app.config.consumer
            )
        })?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the durable consumer: {e}"))?;
    tracing::info!(consumer = %app.config.consumer, "reading findings");
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("findings consumer: {e}");
                continue;
            }
        };
        // A store error returns before the ack: the finding comes again.
        store_finding(app, &message.subject, &message.payload).await?;
        if let Err(e) = message.ack().await {
            tracing::warn!("cannot ack a finding (it comes again and is not stored twice): {e}");
        }
    }
    Ok(())
}

async fn store_finding(app: &Shared, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
    let finding: Finding = match protocol::decode(payload) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(%subject, "skipping a malformed finding: {e}");
            app.metrics.rejected("malformed");
            return Ok(());
        }
    };
    if host_token(subject) != Some(subject::host_token(&finding.host).as_str()) {
        tracing::warn!(%subject, host = %finding.host, "skipping a finding whose host does not match its subject");
        app.metrics.rejected("host_mismatch");
        return Ok(());
    }
    let severity = finding.severity;
    let json = serde_json::to_value(&finding)?;
    let stored = app
        .store
        .write(move |c| findings::insert(c, &finding, Timestamp::now()))
        .await?;
    app.metrics.finding(severity, stored);
    if stored {
        app.publish("finding", json);
    }
    Ok(())
}

async fn heartbeats(app: Shared) {
    let mut sub = match app.nats.subscribe("osprey.heartbeat.*").await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot subscribe to heartbeats: {e}");
            return;
        }
    };
    while let Some(message) = sub.next().await {
        let heartbeat: Heartbeat = match protocol::decode(&message.payload) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(subject = %message.subject, "skipping a malformed heartbeat: {e}");
                app.metrics.rejected("malformed");
                continue;
            }
        };
        if host_token(&message.subject) != Some(subject::host_token(&heartbeat.host).as_str()) {
            app.metrics.rejected("host_mismatch");
            continue;
        }
        let json = serde_json::to_value(&heartbeat).unwrap_or_default();
        match app
            .store
            .write(move |c| hosts::insert_heartbeat(c, &heartbeat))
            .await
        {
            Ok(()) => {
                app.metrics.heartbeat();
                app.publish("heartbeat", json);
            }
            Err(e) => tracing::error!("cannot store a heartbeat: {e}"),
        }
    }
}

async fn audit_records(app: Shared) {
    // Per source: `osprey.audit.<host>` (actuators, history overrides) and
    // `osprey.audit._responder`.
    let mut messages = match app.nats.subscribe(subject::AUDIT_WILDCARD).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot subscribe to audit records: {e}");
            return;
        }
    };
    while let Some(message) = messages.next().await {
        let record: AuditRecord = match protocol::decode(&message.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subject = %message.subject, "skipping a malformed audit record: {e}");
                app.metrics.rejected("malformed");
                continue;
            }
        };
        // A host may only speak for itself.
        if let Some(token) = host_token(&message.subject) {
            if message.subject.as_str() != subject::AUDIT_RESPONDER
                && token != subject::host_token(&record.host)
            {
                app.metrics.rejected("host_mismatch");
                continue;
            }
        }
        app.metrics.audit(&record);
        let json = serde_json::to_value(&record).unwrap_or_default();
        match app.store.write(move |c| audit::insert(c, &record)).await {
            Ok(seq) => {
                let mut json = json;
                json["seq"] = seq.into();
                app.publish("audit", json);
            }
            Err(e) => tracing::error!("cannot store an audit record: {e}"),
        }
    }
}

async fn events(app: Shared) {
    let sub = match app.nats.subscribe("osprey.events.>").await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot subscribe to events: {e}");
            return;
        }
    };
    // Written in batches: events are many.
    let mut batches = sub.ready_chunks(500);
    while let Some(batch) = batches.next().await {
        let mut decoded = Vec::with_capacity(batch.len());
        for message in batch {
            match protocol::decode::<Event>(&message.payload) {
                Ok(e)
                    if host_token(&message.subject)
                        == Some(subject::host_token(&e.host).as_str()) =>
                {
                    decoded.push(e)
                }
                Ok(_) => app.metrics.rejected("host_mismatch"),
                Err(_) => app.metrics.rejected("malformed"),
            }
        }
        let written = app
            .store
            .write(move |c| {
                let tx = c.transaction()?;
                for e in &decoded {
                    findings::insert_event(&tx, e)?;
                }
                tx.commit()
            })
            .await;
        if let Err(e) = written {
            tracing::error!("cannot store events: {e}");
        }
    }
}

async fn retention_loop(app: Shared) {
    let limits = app.config.retention.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(limits.check_interval_secs));
    loop {
        tick.tick().await;
        let limits = limits.clone();
        let now = Timestamp::now().unix_nanos();
        match app
            .store
            .write(move |c| {
                let deleted = retention::enforce(c, now, &limits)?;
                Ok((deleted, used_bytes(c)?))
            })
            .await
        {
            Ok((deleted, bytes)) => {
                if deleted.total() > 0 {
                    tracing::info!(?deleted, "retention");
                }
                app.metrics.retention(&deleted);
                app.metrics.database_bytes(bytes);
            }
            Err(e) => tracing::error!("retention: {e}"),
        }
    }
}
