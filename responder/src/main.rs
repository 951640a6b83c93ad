//! `osprey-responder`: the response service (docs/responder.md).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use clap::Parser;
use futures::StreamExt;
use protocol::{signing::KeyPair, subject, Finding, Heartbeat};
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

    let mut options = async_nats::ConnectOptions::new().name("osprey-responder");
    if let Some(creds) = &config.nats.credentials {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cannot read {}", creds.display()))?;
    }
    let client = options
        .connect(config.nats.url.as_str())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let js = jetstream::new(client.clone());
    // JetStream is required: without it findings published while we are down would be lost.
    let stream = open_stream(&js).await.map_err(|e| {
        anyhow::anyhow!(
            "JetStream is required (durable findings) but {} does not offer it: {e:#}. \
             Run nats-server with JetStream enabled (-js, or `jetstream {{}}` in its config).",
            config.nats.url
        )
    })?;
    let consumer = stream
        .get_or_create_consumer(
            &config.consumer,
            pull::Config {
                durable_name: Some(config.consumer.clone()),
                filter_subject: subject::FINDINGS_WILDCARD.to_string(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .context("cannot create the durable consumer")?;
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read from the durable consumer")?;
    let mut approvals = client
        .subscribe(subject::APPROVALS)
        .await
        .context("cannot subscribe to approvals")?;
    let mut heartbeats = client
        .subscribe("osprey.heartbeat.*")
        .await
        .context("cannot subscribe to heartbeats")?;
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
    tracing::info!(dry_run = responder.dry_run(), "osprey-responder running");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { anyhow::bail!("the findings consumer ended") };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("findings consumer: {e}");
                        continue;
                    }
                };
                let host = msg.subject.split('.').nth(2).unwrap_or("").to_string();
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
            Some(msg) = approvals.next() => responder.handle_approval(&msg.payload).await,
            Some(msg) = control_requests.next() => control.serve(&client, &mut responder, msg).await,
            Some(msg) = heartbeats.next() => {
                let token = msg.subject.split('.').nth(2).unwrap_or("").to_string();
                if let Ok(h) = protocol::decode::<Heartbeat>(&msg.payload) {
                    responder.heartbeat(&token, h.host);
                }
            }
            _ = tick.tick() => responder.tick(&js).await,
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("osprey-responder stopped");
    Ok(())
}

/// The findings stream: used as it is when it exists (a collector may have created it, or
/// its owner tuned it), else created the way collectors create it.
async fn open_stream(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    use async_nats::jetstream::{context::GetStreamErrorKind, ErrorCode};
    for _ in 0..3 {
        match js.get_stream(subject::FINDINGS_STREAM).await {
            Ok(s) => return Ok(s),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {}
            Err(e) => return Err(e.into()),
        }
        let created = js
            .create_stream(stream::Config {
                name: subject::FINDINGS_STREAM.to_string(),
                subjects: vec![subject::FINDINGS_WILDCARD.to_string()],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(10 * 60),
                description: Some("Osprey findings (published by collectors)".to_string()),
                ..Default::default()
            })
            .await;
        match created {
            Ok(s) => return Ok(s),
            // Another client created it meanwhile: look it up again.
            Err(e) => tracing::debug!("creating {}: {e}", subject::FINDINGS_STREAM),
        }
    }
    Ok(js.get_stream(subject::FINDINGS_STREAM).await?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
