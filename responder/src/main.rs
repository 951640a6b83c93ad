//! `osprey-responder`: the response service (docs/responder.md).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use async_nats::jetstream;
use bus::{FindingsStream, IfMissing, Intake};
use clap::Parser;
use futures::StreamExt;
use protocol::{signing::KeyPair, subject, AuditRecord, Finding, Heartbeat};
use responder::{
    config::ResponderConfig, control::Control, policy::ResponsePolicy, responder::Responder,
};

/// Osprey's response service: findings → response policy → safety controls → signed
/// commands to the hosts, every decision audited.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML).
    #[arg(long, default_value = "/etc/osprey/responder.yaml")]
    config: PathBuf,
    /// NATS server URL.
    #[arg(long, env = "OSPREY_NATS_URL")]
    nats: Option<String>,
    /// Response policy file.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Decide and audit only; send nothing.
    #[arg(long)]
    dry_run: bool,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ResponderConfig::load(&args.config)?;
    if let Some(url) = args.nats {
        config.nats.url = url;
    }
    if let Some(p) = args.policy {
        config.policy = p;
    }
    config.dry_run |= args.dry_run;
    let policy = ResponsePolicy::load(&config.policy)?;
    let key_text = std::fs::read_to_string(&config.signing_key).with_context(|| {
        format!(
            "cannot read the signing key {}",
            config.signing_key.display()
        )
    })?;
    let key = KeyPair::from_secret_base64(&key_text)
        .map_err(|e| anyhow::anyhow!("signing key {}: {e}", config.signing_key.display()))?;

    let client = bus::options(bus::Role::Responder, config.nats.credentials.as_deref())?
        .name("osprey-responder")
        .max_reconnects(None)
        .connect(bus::servers(&config.nats.url))
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let js = jetstream::new(client.clone());
    // JetStream is required: without it findings published while we are down would be lost.
    let spec = FindingsStream {
        replicas: config.nats.stream_replicas.0,
        ..FindingsStream::default()
    };
    let stream = bus::stream::open_findings(&js, &client, &spec, IfMissing::Create)
        .await
        .map_err(|e| match e {
            bus::OpenError::Wrong(wrong) => anyhow::anyhow!("{wrong}"),
            other => anyhow::anyhow!(
                "JetStream is required (durable findings) but {}: {other}. Run nats-server with \
                 JetStream enabled (-js, or `jetstream {{}}` in its config; deploy/nats has one).",
                config.nats.url
            ),
        })?;
    let replicas = stream.cached_info().config.num_replicas;
    if bus::stream::cluster_size(&client) >= 3 && replicas < 3 {
        tracing::warn!(
            replicas,
            "{} has {replicas} replica(s) in a cluster of 3 or more servers: losing one server \
             loses or stalls findings; raise it to 3 (nats stream edit)",
            subject::FINDINGS_STREAM
        );
    }
    let mut intake = Intake::open(&stream, &config.consumer).await?;
    let mut approvals = client
        .subscribe(subject::APPROVALS)
        .await
        .context("cannot subscribe to approvals")?;
    let mut heartbeats = client
        .subscribe(subject::HEARTBEAT_WILDCARD)
        .await
        .context("cannot subscribe to heartbeats")?;
    // Hosts' own audit records: the late answers of commands that timed out.
    let mut host_audits = client
        .subscribe(subject::AUDIT_WILDCARD)
        .await
        .context("cannot subscribe to audit records")?;
    let mut proposals = client
        .subscribe(subject::RESPONDER_PROPOSALS)
        .await
        .context("cannot subscribe to proposals")?;
    let mut control_requests = client
        .subscribe(subject::RESPONDER_CONTROL)
        .await
        .context("cannot subscribe to responder control")?;
    let mut control = Control::new(&config, client.clone())?;
    if let Some(address) = config.metrics_address {
        metrics::spawn(address, responder::metrics::get().registry()).await?;
    }
    let mut responder = Responder::new(config, policy, key, client.clone())?;
    control.restore(&mut responder, args.dry_run);
    responder.resume().await;
    tracing::info!(
        dry_run = responder.dry_run(),
        replicas,
        "osprey-responder running"
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let shutdown = service::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            msg = intake.next() => {
                let host = subject::subject_host_token(&msg.subject).unwrap_or("").to_string();
                match protocol::decode::<Finding>(&msg.payload) {
                    Ok(f) => {
                        responder::metrics::get().finding(f.severity);
                        responder.handle_finding(&host, f).await
                    }
                    Err(e) => tracing::warn!(subject = %msg.subject, "skipping a malformed finding: {e}"),
                }
                if let Err(e) = msg.ack().await {
                    tracing::warn!("cannot ack a finding (it will be redelivered and skipped): {e}");
                }
            }
            Some(msg) = approvals.next() => {
                let outcome = responder.handle_approval(&msg.payload).await;
                if let Some(reply) = msg.reply {
                    if let Err(e) = client.publish(reply, outcome.into()).await {
                        tracing::warn!("cannot answer an approval: {e}");
                    }
                }
            }
            Some(msg) = proposals.next() => {
                let reply = responder.handle_proposal(&msg.payload).await;
                if let Some(to) = msg.reply {
                    match protocol::encode(&reply) {
                        Ok(bytes) => {
                            if let Err(e) = client.publish(to, bytes.into()).await {
                                tracing::warn!("cannot answer a proposal: {e}");
                            }
                        }
                        Err(e) => tracing::error!("cannot encode a proposal reply: {e}"),
                    }
                }
            }
            Some(msg) = control_requests.next() => control.serve(&client, &mut responder, msg).await,
            Some(msg) = heartbeats.next() => {
                // The subject says which host is alive; the payload must only be a heartbeat.
                match (subject::subject_host_token(&msg.subject), protocol::decode::<Heartbeat>(&msg.payload)) {
                    (Some(token), Ok(_)) => responder.heartbeat(token),
                    _ => tracing::debug!(subject = %msg.subject, "ignoring a malformed heartbeat"),
                }
            }
            Some(msg) = host_audits.next() => {
                if msg.subject.as_str() == subject::AUDIT_RESPONDER {
                    continue;
                }
                if let (Some(token), Ok(record)) = (subject::subject_host_token(&msg.subject), protocol::decode::<AuditRecord>(&msg.payload)) {
                    responder.host_audit(token, record).await;
                }
            }
            _ = tick.tick() => responder.tick(&js).await,
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("osprey-responder stopped");
    Ok(())
}

fn main() -> ExitCode {
    service::init_logs();
    let args = Args::parse();
    service::exit(service::block_on(run(args)))
}
