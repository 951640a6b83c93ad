//! `osprey tail`: follow findings (and optionally events) as they are published.

use std::{
    io::{self, IsTerminal, Write},
    time::Duration,
};

use anyhow::Context as _;
use async_nats::{
    jetstream::{self, consumer},
    Client,
};
use futures::{stream::BoxStream, StreamExt};
use protocol::{subject, Event, Finding};

use crate::render;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub nats: crate::operator::NatsArgs,
    /// Only this host (as named by the collector).
    #[arg(long)]
    pub host: Option<String>,
    /// Also print events (exec, fork, exit, connect) when collectors publish them.
    #[arg(long)]
    pub events: bool,
    /// Output: `text` (one coloured line each), `json` (Osprey's JSON, one object per line) or
    /// `ocsf` (OCSF 1.3 JSON per line: Detection Finding 2004, Process Activity 1007, Network
    /// Activity 4001).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Replay the findings stored in the OSPREY_FINDINGS stream before following new ones.
    #[arg(long)]
    pub since_start: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Ocsf,
}

enum Incoming {
    Finding(async_nats::Message),
    Event(async_nats::Message),
    /// A problem worth telling the operator about, without stopping.
    Warning(String),
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let client = args.nats.connect("osprey-tail", true).await?;
    let token = args.host.as_deref().map(subject::host_token);
    let findings_subject = match &token {
        Some(token) => format!("osprey.findings.{token}.>"),
        None => subject::FINDINGS_WILDCARD.to_string(),
    };

    let findings: BoxStream<'static, Incoming> = if args.since_start {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            replay = replay_findings(&client, findings_subject) => replay?,
        }
    } else {
        client
            .subscribe(findings_subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {findings_subject}"))?
            .map(Incoming::Finding)
            .boxed()
    };
    let mut incoming = if args.events {
        let events_subject = match &token {
            Some(token) => format!("osprey.events.{token}.>"),
            None => "osprey.events.>".to_string(),
        };
        let events = client
            .subscribe(events_subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {events_subject}"))?
            .map(Incoming::Event);
        futures::stream::select(findings, events).boxed()
    } else {
        findings
    };

    let printer = Printer {
        format: if args.json { Format::Json } else { args.format },
        colour: io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
    };
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => break,
            next = incoming.next() => next,
        };
        let Some(item) = next else { break };
        match printer.print(item) {
            Ok(()) => {}
            // The reader went away (e.g. `osprey tail | head`): that is a normal end.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => break,
            Err(error) => return Err(error).context("cannot write to stdout"),
        }
    }
    Ok(())
}

/// Stored findings first, then new ones, through an ordered consumer on `OSPREY_FINDINGS`.
/// Waits (retrying) until JetStream answers.
async fn replay_findings(
    client: &Client,
    filter_subject: String,
) -> anyhow::Result<BoxStream<'static, Incoming>> {
    let js = jetstream::new(client.clone());
    let mut warned = false;
    let stream = loop {
        match js.get_stream(subject::FINDINGS_STREAM).await {
            Ok(stream) => break stream,
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, "waiting for the {} stream", subject::FINDINGS_STREAM);
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("cannot create an ordered consumer on the findings stream")?;
    let messages = consumer
        .messages()
        .await
        .context("cannot read the findings stream")?;
    Ok(messages
        .map(|message| match message {
            Ok(message) => Incoming::Finding(message.message),
            Err(error) => Incoming::Warning(format!("findings stream: {error}")),
        })
        .boxed())
}

struct Printer {
    format: Format,
    colour: bool,
}

impl Printer {
    fn print(&self, item: Incoming) -> io::Result<()> {
        let line = match item {
            Incoming::Finding(message) => match protocol::decode::<Finding>(&message.payload) {
                Ok(finding) => match self.format {
                    Format::Text => render::finding_line(&finding, self.colour),
                    Format::Json => to_json(&finding),
                    Format::Ocsf => protocol::ocsf::finding(&finding).to_string(),
                },
                Err(error) => return undecodable(&message, &error),
            },
            Incoming::Event(message) => match protocol::decode::<Event>(&message.payload) {
                Ok(event) => match self.format {
                    Format::Text => render::event_line(&event),
                    Format::Json => to_json(&event),
                    Format::Ocsf => protocol::ocsf::event(&event).to_string(),
                },
                Err(error) => return undecodable(&message, &error),
            },
            Incoming::Warning(warning) => {
                tracing::warn!("{warning}");
                return Ok(());
            }
        };
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own plain structs to JSON cannot fail; keep the line anyway if it does.
    serde_json::to_string(value)
        .unwrap_or_else(|error| serde_json::json!({ "error": error.to_string() }).to_string())
}

fn undecodable(message: &async_nats::Message, error: &protocol::CodecError) -> io::Result<()> {
    tracing::warn!(subject = %message.subject, %error, "skipping a message that is not an Osprey payload");
    Ok(())
}
