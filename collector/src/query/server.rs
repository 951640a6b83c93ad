//! The NATS side of host state queries: subscribes to `osprey.query.<host>`, hands each
//! decoded [`Query`] to the pipeline over a bounded channel and sends back its
//! [`Snapshot`]. Read-only; who may ask is the NATS server's business (operator credentials
//! only, deploy/nats). A malformed query, a pipeline too busy to take one more, or an answer
//! too big for the server's `max_payload` is answered with a `note` saying so, never dropped
//! silently.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use protocol::{subject, Query, Snapshot, Timestamp};
use tokio::sync::{mpsc, oneshot};

/// Queries waiting for the pipeline before new ones are answered "busy".
const QUEUE: usize = 16;
/// Longest the server waits for the pipeline's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A query for the pipeline, and where its answer goes.
pub struct QueryRequest {
    pub query: Query,
    pub reply: oneshot::Sender<Snapshot>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryServerError {
    #[error(transparent)]
    Credentials(#[from] bus::CredentialsError),
    #[error("invalid NATS server address {url:?}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
}

/// The running server: its task, and the requests it hands to the pipeline.
pub struct QueryServer {
    pub requests: mpsc::Receiver<QueryRequest>,
    pub task: tokio::task::JoinHandle<()>,
}

impl QueryServer {
    /// Connects (retrying in the background until the server is reachable) and serves
    /// `osprey.query.<host>` on the current runtime.
    pub async fn start(
        url: &str,
        credentials: Option<&PathBuf>,
        host: &str,
    ) -> Result<QueryServer, QueryServerError> {
        // The host's own credentials and reply inbox, as the publisher's and the actuator's.
        let client = bus::options(bus::Role::Host(host), credentials.map(PathBuf::as_path))?
            .name(format!("osprey-query@{host}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(bus::servers(url))
            .await
            .map_err(|source| QueryServerError::Connect {
                url: url.to_string(),
                source,
            })?;
        let (to_pipeline, requests) = mpsc::channel(QUEUE);
        let host = host.to_string();
        let task = tokio::spawn(serve(client, host, to_pipeline));
        Ok(QueryServer { requests, task })
    }
}

async fn serve(client: async_nats::Client, host: String, pipeline: mpsc::Sender<QueryRequest>) {
    let subject = subject::query(&host);
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("queries: cannot subscribe to {subject}: {e}");
            return;
        }
    };
    tracing::info!(subject, "answering host state queries");
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply else {
            tracing::debug!("a query without a reply subject: ignored");
            continue;
        };
        let snapshot = match protocol::decode::<Query>(&msg.payload) {
            Err(e) => note(&host, format!("malformed query: {e}")),
            Ok(query) => ask(&pipeline, &host, query).await,
        };
        let bytes = fit(snapshot, client.server_info().max_payload);
        if let Err(e) = client.publish(reply, bytes.into()).await {
            tracing::warn!("queries: cannot answer: {e}");
        }
    }
}

async fn ask(pipeline: &mpsc::Sender<QueryRequest>, host: &str, query: Query) -> Snapshot {
    let (reply, answer) = oneshot::channel();
    match pipeline.try_send(QueryRequest { query, reply }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return note(
                host,
                format!("busy: {QUEUE} queries are waiting for the collector; ask again"),
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return note(host, "the collector is stopping".into())
        }
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(_)) => note(host, "the collector dropped the query".into()),
        Err(_) => note(
            host,
            format!(
                "the collector did not answer within {}s",
                ANSWER_WITHIN.as_secs()
            ),
        ),
    }
}

fn note(host: &str, why: String) -> Snapshot {
    Snapshot {
        host: host.to_string(),
        time: Timestamp::now(),
        total: 0,
        processes: Vec::new(),
        note: Some(why),
    }
}

/// The encoded answer, with processes left off the end (and a note saying so) until it fits
/// in `max_payload` bytes.
fn fit(mut snapshot: Snapshot, max_payload: usize) -> Vec<u8> {
    let asked = snapshot.processes.len();
    loop {
        match protocol::encode(&snapshot) {
            Ok(bytes) if bytes.len() <= max_payload || snapshot.processes.is_empty() => {
                return bytes
            }
            Ok(_) => {
                let keep = snapshot.processes.len() / 2;
                snapshot.processes.truncate(keep);
                snapshot.note = Some(format!(
                    "page cut from {asked} to {keep} processes to fit the NATS server's \
                     max_payload ({max_payload} bytes): ask for smaller pages"
                ));
            }
            Err(e) => {
                tracing::error!("queries: cannot encode an answer: {e}");
                let fallback = note(&snapshot.host, format!("cannot encode the answer: {e}"));
                return protocol::encode(&fallback).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_too_big_for_the_server_are_cut_with_a_note() {
        let process = protocol::Process::new(
            "00000001-5-6-0".parse().unwrap(),
            "/usr/bin/python3",
            vec!["x".repeat(1000)],
        );
        let state = protocol::ProcessState {
            process,
            ancestry: vec![],
            age_secs: 1,
            exited: false,
            cpu_percent: None,
            rss_bytes: None,
            connections: vec![],
            findings: vec![],
            intel: None,
            risk: protocol::Risk {
                level: protocol::Severity::Info,
                reasons: vec![],
            },
        };
        let snapshot = Snapshot {
            processes: vec![state; 100],
            total: 100,
            ..note("h", String::new())
        };
        let bytes = fit(snapshot, 20_000);
        assert!(bytes.len() <= 20_000);
        let back: Snapshot = protocol::decode(&bytes).unwrap();
        assert!(back.processes.len() < 100 && !back.processes.is_empty());
        assert_eq!(back.total, 100);
        assert!(back.note.unwrap().contains("max_payload"));
    }
}
