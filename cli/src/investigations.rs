//! `osprey investigations [--host H] [--limit N]` and `osprey investigations show ID`: the
//! AI investigator's records, read from the `OSPREY_INVESTIGATIONS` stream through an ordered
//! consumer of the operator's own (docs/investigator.md).

use std::{collections::VecDeque, process::ExitCode};

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use protocol::{subject, Investigation};

use crate::{operator::NatsArgs, render};

/// Most records read from the stream for one command.
const MAX_SCANNED: u64 = 100_000;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InvestigationsArgs {
    #[command(subcommand)]
    pub command: Option<InvestigationsCommand>,
    /// Only investigations of this host's findings.
    #[arg(long)]
    pub host: Option<String>,
    /// The latest N.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum InvestigationsCommand {
    /// One investigation in full: steps (tool calls and results), proposals, outcome.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn run(args: InvestigationsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(InvestigationsCommand::Show(show)) => {
            let records = read(&show.nats, None).await?;
            let Some(record) = records.into_iter().find(|r| r.id == show.id) else {
                eprintln!("no investigation {}", show.id);
                return Ok(ExitCode::FAILURE);
            };
            if show.json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print!("{}", details(&record));
            }
        }
        None => {
            let records = read(&args.nats, args.host.as_deref()).await?;
            let mut latest: VecDeque<Investigation> = VecDeque::new();
            for record in records {
                latest.push_back(record);
                if latest.len() > args.limit {
                    latest.pop_front();
                }
            }
            for record in latest {
                if args.json {
                    println!("{}", serde_json::to_string(&record)?);
                } else {
                    println!("{}", line(&record));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every stored record (of `host`), oldest first.
async fn read(nats: &NatsArgs, host: Option<&str>) -> anyhow::Result<Vec<Investigation>> {
    let client = nats.connect("osprey investigations", false).await?;
    let js = jetstream::new(client);
    let stream = match js.get_stream(subject::INVESTIGATIONS_STREAM).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!("no stream {}: {e}", subject::INVESTIGATIONS_STREAM);
            return Ok(Vec::new());
        }
    };
    let filter_subject = match host {
        Some(h) => subject::investigations(h),
        None => format!("{}.>", subject::INVESTIGATIONS),
    };
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("cannot create an ordered consumer on the investigations stream")?;
    let pending = consumer.info().await?.num_pending.min(MAX_SCANNED);
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the investigations stream")?
        .take(pending as usize);
    while let Some(message) = messages.next().await {
        let message = message.context("reading the investigations stream")?;
        match protocol::decode::<Investigation>(&message.payload) {
            Ok(record) => out.push(record),
            Err(e) => {
                tracing::warn!(subject = %message.subject, "skipping a record that is not an investigation: {e}")
            }
        }
    }
    Ok(out)
}

/// `malicious (90%)`, or how the investigation ended when the model gave no verdict
/// (`llm_unavailable`, `budget_exhausted`).
pub fn verdict(record: &Investigation) -> String {
    match (record.verdict, record.confidence) {
        (Some(v), Some(c)) => format!("{} ({:.0}%)", v.as_str(), c * 100.0),
        (Some(v), None) => v.as_str().to_string(),
        _ => record.outcome.status().to_string(),
    }
}

fn line(record: &Investigation) -> String {
    format!(
        "{}  {}  {}  {}  {}  {}  {}",
        render::short_time(record.finished),
        record.id,
        render::clean(&record.host),
        render::clean(&record.rule_id),
        verdict(record),
        render::clean(&record.outcome.to_string()),
        render::truncate(&render::clean(&record.summary), 80),
    )
}

/// The full record for a terminal: model text and tool results are escaped, never
/// interpreted.
fn details(record: &Investigation) -> String {
    let mut out = format!(
        "investigation {}\n  finding:  {} ({}) on {}\n  model:    {}\n  time:     {} – {}\n  verdict:  {}\n  outcome:  {}\n  tokens:   {}\n  summary:  {}\n",
        record.id,
        record.finding_id,
        render::clean(&record.rule_id),
        render::clean(&record.host),
        render::clean(&record.model),
        render::short_time(record.started),
        render::short_time(record.finished),
        verdict(record),
        render::clean(&record.outcome.to_string()),
        record.tokens,
        render::clean(&record.summary),
    );
    for (i, step) in record.steps.iter().enumerate() {
        out.push_str(&format!(
            "  step {}: {}({})\n    → {}\n",
            i + 1,
            render::clean(&step.tool),
            render::clean(&step.arguments),
            render::truncate(&render::clean(&step.result), 400),
        ));
    }
    for p in &record.proposals {
        let answer = p
            .reply
            .as_ref()
            .map(|r| render::clean(&r.reason).into_owned())
            .unwrap_or_else(|| "no answer from the responder".to_string());
        out.push_str(&format!(
            "  proposed {} on {}: {}\n    responder: {}\n",
            p.action.as_str(),
            p.target
                .map(|t| t.to_string())
                .unwrap_or_else(|| "the finding's process".to_string()),
            render::clean(&p.reason),
            answer,
        ));
    }
    out
}
