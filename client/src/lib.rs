//! What every operator surface (the `osprey` CLI, `osprey-console`) does on the bus: connect
//! with the operator's credentials, sign a [`Command`] with the operator key and send it as a
//! request to the host's actuator, publish signed approvals, switch the responder's mode.
//!
//! One place for "build, sign, send, await the answer", so the CLI and the console behave
//! the same way and fail with the same messages.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{jetstream, Client, ConnectOptions, ServerAddr};
use protocol::{
    signing::KeyPair, subject, Action, Approval, CodecError, Command, CommandResult, ControlReply,
    FindingId, Query, ResponderControl, Snapshot, Timestamp, Verdict,
};

/// Longest a host may take to answer a command: a quarantine hashes and may copy a file.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a host may take to answer a state query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the NATS credentials {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid NATS server address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot read the operator key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("nobody answers on {subject}: is {who} running, with that name, and connected to this NATS?")]
    NoResponders { subject: String, who: String },
    #[error("{who} did not answer within {secs}s")]
    Timeout { who: String, secs: u64 },
    #[error("request on {subject} failed: {reason}")]
    Request { subject: String, reason: String },
    #[error("cannot publish on {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
}

/// How to reach NATS: the server URL(s) (`a,b,c` for a cluster) and an optional `.creds` file.
#[derive(Clone, Debug)]
pub struct NatsTarget<'a> {
    pub url: &'a str,
    pub credentials: Option<&'a Path>,
    /// The connection's name as the server shows it.
    pub name: &'a str,
}

impl NatsTarget<'_> {
    fn servers(&self) -> Result<Vec<ServerAddr>, ClientError> {
        let servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| ClientError::Address {
                    address: s.to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ClientError::Address {
                address: self.url.to_string(),
                reason: "no server address given".into(),
            });
        }
        Ok(servers)
    }

    async fn options(&self, servers: &[ServerAddr]) -> Result<ConnectOptions, ClientError> {
        let mut options = ConnectOptions::new().name(self.name);
        // `nats://user:password@host`: the client library does not log in with a URL's user
        // by itself.
        if let Some(first) = servers.iter().find(|s| s.has_user_pass()) {
            if let (Some(user), Some(password)) = (first.username(), first.password()) {
                options = options.user_and_password(user.to_string(), password.to_string());
            }
        }
        if let Some(path) = self.credentials {
            options = options.credentials_file(path).await.map_err(|source| {
                ClientError::Credentials {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        Ok(options)
    }
}

/// Connects once: fails at once when no server answers (for one-shot commands).
pub async fn connect(target: &NatsTarget<'_>) -> Result<Client, ClientError> {
    let servers = target.servers()?;
    target
        .options(&servers)
        .await?
        .connect(servers)
        .await
        .map_err(|e| ClientError::Connect {
            url: target.url.to_string(),
            reason: e.to_string(),
        })
}

/// Connects without requiring a server to be up: the client keeps retrying in the background
/// and subscriptions take effect once it is connected (services, consoles, `osprey tail`).
/// Fails only on an unreadable credentials file or an invalid address. An outage is logged
/// once, not at every attempt.
pub async fn connect_retrying(target: &NatsTarget<'_>) -> Result<Client, ClientError> {
    let servers = target.servers()?;
    let url = target.url.to_string();
    let unreachable_reported = Arc::new(AtomicBool::new(false));
    target
        .options(&servers)
        .await?
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
        .map_err(|e| ClientError::Connect {
            url: target.url.to_string(),
            reason: e.to_string(),
        })
}

/// Reads an operator's secret key as `osprey keys generate` writes it.
pub fn load_key(path: &Path) -> Result<KeyPair, ClientError> {
    let err = |reason: String| ClientError::Key {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    KeyPair::from_secret_base64(&text).map_err(|e| err(e.to_string()))
}

/// The signer of operator messages: a key and, where known, the human behind it (audited by
/// the host or the responder).
pub struct Operator<'a> {
    pub key: &'a KeyPair,
    pub name: Option<&'a str>,
}

/// What to do on which host.
#[derive(Clone, Debug)]
pub struct CommandRequest {
    pub host: String,
    pub action: Action,
    pub finding_id: Option<FindingId>,
}

/// Builds a [`Command`], signs it as `operator`, sends it to the host's actuator and waits up
/// to `timeout` for its [`CommandResult`]. Returns the signed command's id with the result.
pub async fn send_command(
    client: &Client,
    operator: &Operator<'_>,
    request: CommandRequest,
    timeout: Duration,
) -> Result<(Command, CommandResult), ClientError> {
    let mut command = Command::new(request.host, request.action, request.finding_id);
    command.operator = operator.name.map(String::from);
    operator.key.sign(&mut command);
    let result = request_command(client, &command, timeout).await?;
    Ok((command, result))
}

/// Sends an already signed command and waits for the actuator's answer.
pub async fn request_command(
    client: &Client,
    command: &Command,
    timeout: Duration,
) -> Result<CommandResult, ClientError> {
    let subject = subject::command(&command.host);
    let who = format!("the actuator of host {}", command.host);
    let reply = request(client, subject, protocol::encode(command)?, &who, timeout).await?;
    Ok(protocol::decode(&reply)?)
}

/// Asks `host`'s collector about its live state (`osprey.query.<host>`; answered only to
/// operator credentials).
pub async fn query(
    client: &Client,
    host: &str,
    query: &Query,
    timeout: Duration,
) -> Result<Snapshot, ClientError> {
    let who = format!("the collector of host {host}");
    let reply = request(
        client,
        subject::query(host),
        protocol::encode(query)?,
        &who,
        timeout,
    )
    .await?;
    Ok(protocol::decode(&reply)?)
}

/// Signs and publishes an approval (or denial) of a pending action on
/// `osprey.responder.approvals`, flushed before returning. The responder answers by auditing.
pub async fn send_approval(
    client: &Client,
    operator: &Operator<'_>,
    pending_id: &str,
    verdict: Verdict,
) -> Result<Approval, ClientError> {
    let mut approval = Approval {
        pending_id: pending_id.to_string(),
        verdict,
        nonce: protocol::signing::random_id(),
        issued_at: Timestamp::now(),
        operator: operator.name.map(String::from),
        key_id: String::new(),
        signature: None,
    };
    operator.key.sign(&mut approval);
    let publish_err = |reason: String| ClientError::Publish {
        subject: subject::APPROVALS.to_string(),
        reason,
    };
    client
        .publish(subject::APPROVALS, protocol::encode(&approval)?.into())
        .await
        .map_err(|e| publish_err(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| publish_err(e.to_string()))?;
    Ok(approval)
}

/// Asks the responder for its mode, or switches dry-run on or off (`Some(on)`), signed as
/// `operator`; returns the responder's answer.
pub async fn send_control(
    client: &Client,
    operator: &Operator<'_>,
    dry_run: Option<bool>,
    timeout: Duration,
) -> Result<ControlReply, ClientError> {
    let mut control = ResponderControl::new(dry_run, operator.name.map(String::from));
    operator.key.sign(&mut control);
    let reply = request(
        client,
        subject::RESPONDER_CONTROL.to_string(),
        protocol::encode(&control)?,
        "the responder",
        timeout,
    )
    .await?;
    Ok(protocol::decode(&reply)?)
}

async fn request(
    client: &Client,
    subject: String,
    payload: Vec<u8>,
    who: &str,
    timeout: Duration,
) -> Result<bytes::Bytes, ClientError> {
    let reply = tokio::time::timeout(timeout, client.request(subject.clone(), payload.into()))
        .await
        .map_err(|_| ClientError::Timeout {
            who: who.to_string(),
            secs: timeout.as_secs(),
        })?;
    match reply {
        Ok(message) => Ok(message.payload),
        Err(e) => Err(match e.kind() {
            async_nats::RequestErrorKind::NoResponders => ClientError::NoResponders {
                subject,
                who: who.to_string(),
            },
            async_nats::RequestErrorKind::TimedOut => ClientError::Timeout {
                who: who.to_string(),
                secs: timeout.as_secs(),
            },
            _ => ClientError::Request {
                subject,
                reason: e.to_string(),
            },
        }),
    }
}

/// The findings stream `OSPREY_FINDINGS`: used as it is when it exists (a collector or its
/// owner set it up), else created the way collectors create it.
pub async fn findings_stream(
    js: &jetstream::Context,
) -> Result<jetstream::stream::Stream, ClientError> {
    use async_nats::jetstream::{context::GetStreamErrorKind, stream, ErrorCode};
    let err = |reason: String| ClientError::Stream {
        stream: subject::FINDINGS_STREAM.to_string(),
        reason,
    };
    for _ in 0..3 {
        match js.get_stream(subject::FINDINGS_STREAM).await {
            Ok(s) => return Ok(s),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {}
            Err(e) => return Err(err(e.to_string())),
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
    js.get_stream(subject::FINDINGS_STREAM)
        .await
        .map_err(|e| err(e.to_string()))
}
