//! `osprey-investigator`: optional AI triage (docs/investigator.md).

use std::{
    collections::{HashSet, VecDeque},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use clap::Parser;
use futures::StreamExt;
use investigator::{
    config::InvestigatorConfig,
    investigate::{self, Context},
    llm::Llm,
    memory::Memory,
};
use protocol::{subject, AuditRecord, Finding, Investigation, InvestigationOutcome};
use tokio::sync::Semaphore;

/// Osprey's AI triage: investigates selected findings with an LLM and read-only tools,
/// publishes the records, and proposes actions to the responder (which decides).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML).
    #[arg(long, default_value = "/etc/osprey/investigator.yaml")]
    config: PathBuf,
    /// NATS server URL.
    #[arg(long, env = "OSPREY_NATS_URL")]
    nats: Option<String>,
}

/// Finding ids already investigated (a redelivered finding is not investigated twice).
const SEEN_KEPT: usize = 10_000;
const RECORDS_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = InvestigatorConfig::load(&args.config)?;
    if let Some(url) = args.nats {
        config.nats.url = url;
    }
    let Some(llm_config) = config.llm.clone() else {
        tracing::info!(
            "no llm section in {}: AI triage is off; nothing else changes",
            args.config.display()
        );
        return Ok(());
    };
    let api_key = llm_config
        .api_key_env
        .as_deref()
        .and_then(|name| std::env::var(name).ok())
        .filter(|k| !k.is_empty());
    let llm = Llm::new(
        &llm_config.base_url,
        &llm_config.model,
        api_key,
        Duration::from_secs(llm_config.request_timeout_secs),
    );
    let key = client::load_key(&config.signing_key)?;

    let nats = bus::options(bus::Role::Investigator, config.nats.credentials.as_deref())?
        .name("osprey-investigator")
        .max_reconnects(None)
        .connect(bus::servers(&config.nats.url))
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let js = jetstream::new(nats.clone());
    let findings = open_findings(&js, &nats).await?;
    js.get_or_create_stream(stream::Config {
        name: subject::INVESTIGATIONS_STREAM.to_string(),
        subjects: vec![format!("{}.>", subject::INVESTIGATIONS)],
        max_age: RECORDS_MAX_AGE,
        storage: stream::StorageType::File,
        description: Some("Osprey AI investigations (published by osprey-investigator)".into()),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot open stream {}: {e}", subject::INVESTIGATIONS_STREAM))?;
    let mut intake = bus::Intake::open(&findings, &config.consumer).await?;
    let mut audits = nats
        .subscribe(subject::AUDIT_WILDCARD)
        .await
        .context("cannot subscribe to audit records")?;

    let ctx = Arc::new(Context {
        nats: nats.clone(),
        memory: Arc::new(Mutex::new(Memory::new(config.kept_per_host))),
        redactor: config.redactor()?,
        llm,
        key,
        budgets: config.budgets.clone(),
    });
    let slots = Arc::new(Semaphore::new(config.budgets.max_concurrent));
    let mut started: VecDeque<Instant> = VecDeque::new();
    let mut seen: VecDeque<protocol::FindingId> = VecDeque::new();
    let mut seen_set: HashSet<protocol::FindingId> = HashSet::new();
    tracing::info!(model = %llm_config.model, endpoint = %llm_config.base_url, "osprey-investigator running");

    let shutdown = service::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            msg = intake.next() => {
                let token = subject::subject_host_token(&msg.subject).unwrap_or("").to_string();
                match protocol::decode::<Finding>(&msg.payload) {
                    // Only the subject says which host a finding is from.
                    Ok(f) if subject::host_token(&f.host) == token => {
                        ctx.memory.lock().unwrap_or_else(|e| e.into_inner()).finding(f.clone());
                        if config.select.matches(&f) && seen_set.insert(f.id.clone()) {
                            seen.push_back(f.id.clone());
                            if seen.len() > SEEN_KEPT {
                                if let Some(old) = seen.pop_front() {
                                    seen_set.remove(&old);
                                }
                            }
                            let hour_ago = Instant::now() - Duration::from_secs(3600);
                            started.retain(|t| *t > hour_ago);
                            if started.len() >= config.budgets.max_per_hour as usize {
                                let record = investigate::record(&f, ctx.llm.model(), InvestigationOutcome::BudgetExhausted {
                                    budget: format!("per_hour ({} investigations)", config.budgets.max_per_hour),
                                });
                                publish(&js, &record).await;
                            } else {
                                started.push_back(Instant::now());
                                let (ctx, slots, js) = (ctx.clone(), slots.clone(), js.clone());
                                tokio::spawn(async move {
                                    let Ok(_slot) = slots.acquire_owned().await else { return };
                                    let record = investigate::investigate(&ctx, &f).await;
                                    publish(&js, &record).await;
                                });
                            }
                        }
                    }
                    Ok(_) => tracing::warn!(subject = %msg.subject, "ignoring a finding for another host than its subject's"),
                    Err(e) => tracing::warn!(subject = %msg.subject, "skipping a malformed finding: {e}"),
                }
                // Acked once taken up: an investigation is advice, and one cut short by a
                // restart is not repeated (docs/investigator.md).
                if let Err(e) = msg.ack().await {
                    tracing::warn!("cannot ack a finding: {e}");
                }
            }
            Some(msg) = audits.next() => {
                if let Ok(record) = protocol::decode::<AuditRecord>(&msg.payload) {
                    // A host's records count only for itself; the responder's for any host.
                    let token = subject::subject_host_token(&msg.subject).unwrap_or("");
                    if msg.subject.as_str() == subject::AUDIT_RESPONDER || subject::host_token(&record.host) == token {
                        ctx.memory.lock().unwrap_or_else(|e| e.into_inner()).audit(record);
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("osprey-investigator stopped");
    Ok(())
}

/// The findings stream, waited for: the responder creates it, and the investigator may start
/// first.
async fn open_findings(
    js: &jetstream::Context,
    nats: &async_nats::Client,
) -> anyhow::Result<stream::Stream> {
    let mut warned = false;
    loop {
        match bus::stream::open_findings(
            js,
            nats,
            &bus::FindingsStream::default(),
            bus::IfMissing::Fail,
        )
        .await
        {
            Ok(stream) => return Ok(stream),
            Err(bus::OpenError::Wrong(wrong)) => anyhow::bail!("{wrong}"),
            Err(e) => {
                if !warned {
                    tracing::warn!("waiting for stream {}: {e}", subject::FINDINGS_STREAM);
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn publish(js: &jetstream::Context, record: &Investigation) {
    tracing::info!(id = %record.id, finding = %record.finding_id, outcome = %record.outcome, "investigation finished");
    let bytes = match protocol::encode(record) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot encode an investigation record: {e}");
            return;
        }
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", record.id.as_str());
    let sent = js
        .publish_with_headers(subject::investigations(&record.host), headers, bytes.into())
        .await;
    match sent {
        Ok(ack) => {
            if let Err(e) = ack.await {
                tracing::error!(id = %record.id, "the investigation record was not stored: {e}");
            }
        }
        Err(e) => tracing::error!(id = %record.id, "cannot publish the investigation record: {e}"),
    }
}

fn main() -> ExitCode {
    service::init_logs();
    let args = Args::parse();
    service::exit(service::block_on(run(args)))
}
