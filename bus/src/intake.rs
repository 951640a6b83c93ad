//! Where findings come in for a service (the responder, the investigator): its durable pull
//! consumer on `OSPREY_FINDINGS`, read as a stream of messages that is reopened when it stalls.
//!
//! A pull consumer only delivers what it is asked for; when its server goes away or a JetStream
//! cluster loses and regains quorum, the outstanding pull request can be lost, and the stream
//! then waits for heartbeats that never come. Every error (missed heartbeats included) drops
//! the stream and asks again, with a growing pause between attempts while they keep failing.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, Consumer},
    stream::Stream,
};
use futures::StreamExt;
use protocol::subject;

/// Heartbeats the server sends while a pull request waits; two missed ones reopen the stream.
const HEARTBEAT: Duration = Duration::from_secs(5);
const EXPIRES: Duration = Duration::from_secs(30);
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot open the durable consumer {name}: {reason}")]
    Consumer { name: String, reason: String },
}

pub struct Intake {
    consumer: Consumer<pull::Config>,
    messages: Option<pull::Stream>,
    pause: Duration,
}

impl Intake {
    /// Opens (creating it when missing) the durable consumer `name` of `stream`.
    pub async fn open(stream: &Stream, name: &str) -> Result<Intake, IntakeError> {
        let consumer = stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    filter_subject: subject::FINDINGS_WILDCARD.to_string(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| IntakeError::Consumer {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let mut intake = Intake {
            consumer,
            messages: None,
            pause: Duration::ZERO,
        };
        intake.messages = Some(intake.reopen().await.map_err(|e| IntakeError::Consumer {
            name: name.to_string(),
            reason: e.to_string(),
        })?);
        Ok(intake)
    }

    async fn reopen(&self) -> Result<pull::Stream, async_nats::jetstream::consumer::StreamError> {
        self.consumer
            .stream()
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await
    }

    /// The next finding message. Never ends: errors are logged and the stream reopened.
    /// Cancel-safe (a cancelled call leaves at worst a stream to reopen).
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => {
                    tokio::time::sleep(self.pause).await;
                    match self.reopen().await {
                        Ok(messages) => self.messages.insert(messages),
                        Err(e) => {
                            tracing::warn!("findings consumer: cannot ask for findings: {e}");
                            self.back_off();
                            continue;
                        }
                    }
                }
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.pause = Duration::ZERO;
                    return message;
                }
                Some(Err(e)) => {
                    tracing::warn!("findings consumer: {e}; asking again");
                    self.messages = None;
                    self.back_off();
                }
                None => {
                    tracing::warn!("findings consumer: the stream of messages ended; asking again");
                    self.messages = None;
                    self.back_off();
                }
            }
        }
    }

    fn back_off(&mut self) {
        self.pause = (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
    }
}
