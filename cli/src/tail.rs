//! `osprey tail`: follow findings (and optionally events) as they are published.

use std::{
    io::{self, IsTerminal, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
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
    /// NATS server URL.
    #[arg(
        long = "nats",
        env = "OSPREY_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS credentials: an operator's NKey seed (`osprey creds operator NAME`) or a .creds
    /// file.
    #[arg(long, env = "OSPREY_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// Only this host (as named by the collector).
    #[arg(long)]
    pub host: Option<String>,
    /// Also print events (exec, fork, exit, connect) when collectors publish them.
    #[arg(long)]
    pub events: bool,
    /// Print each message as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Replay the findings stored in the OSPREY_FINDINGS stream before following new ones.
    #[arg(long)]
    pub since_start: bool,
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

    let client = connect(&args).await?;
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
        json: args.json,
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

/// Connects without requiring the server to be up: the client retries in the background and
/// subscriptions take effect once it is connected.
async fn connect(args: &TailArgs) -> anyhow::Result<Client> {
    // `a,b,c`: the servers of a cluster.
    let servers: Vec<&str> = args
        .nats_url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect();
    anyhow::ensure!(
        !servers.is_empty(),
        "no NATS server address given (--nats is empty)"
    );
    let options = bus::options(bus::Role::Operator, args.creds.as_deref())?;
    let url = args.nats_url.clone();
    tracing::info!(%url, "connecting to NATS");
    // Each failed attempt reports an error; the operator needs to hear it once per outage.
    let unreachable_reported = Arc::new(AtomicBool::new(false));
    options
        .name("osprey-tail")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let url = url.clone();
            let unreachable_reported = unreachable_reported.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        unreachable_reported.store(false, Ordering::Relaxed);
                        tracing::info!(%url, "connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%url, "disconnected from NATS; reconnecting")
                    }
                    async_nats::Event::ClientError(error) => {
                        if !unreachable_reported.swap(true, Ordering::Relaxed) {
                            tracing::warn!(%url, %error, "cannot reach NATS; retrying");
                        }
                    }
                    other => tracing::debug!(%url, event = %other, "NATS"),
                }
            }
        })
        .connect(servers)
        .await
        .with_context(|| format!("invalid NATS server address {:?}", args.nats_url))
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
    json: bool,
    colour: bool,
}

impl Printer {
    fn print(&self, item: Incoming) -> io::Result<()> {
        let line = match item {
            Incoming::Finding(message) => match protocol::decode::<Finding>(&message.payload) {
                Ok(finding) if self.json => to_json(&finding),
                Ok(finding) => render::finding_line(&finding, self.colour),
                Err(error) => return undecodable(&message, &error),
            },
            Incoming::Event(message) => match protocol::decode::<Event>(&message.payload) {
                Ok(event) if self.json => to_json(&event),
                Ok(event) => render::event_line(&event),
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
