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
    #[error(transparent)]
    Credentials(#[from] bus::CredentialsError),
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

    /// An operator's options: its own reply inbox, its credentials (an NKey seed as
    /// `osprey creds operator` writes it, or a `.creds` file), a URL's user and password.
    fn options(&self, servers: &[ServerAddr]) -> Result<ConnectOptions, ClientError> {
        let mut options = bus::options(bus::Role::Operator, self.credentials)?.name(self.name);
        // `nats://user:password@host`: the client library does not log in with a URL's user
        // by itself.
        if let Some(first) = servers.iter().find(|s| s.has_user_pass()) {
            if let (Some(user), Some(password)) = (first.username(), first.password()) {
                options = options.user_and_password(user.to_string(), password.to_string());
            }
        }
        Ok(options)
    }
}

/// Connects once: fails at once when no server answers (for one-shot commands).
pub async fn connect(target: &NatsTarget<'_>) -> Result<Client, ClientError> {
    let servers = target.servers()?;
    target
        .options(&servers)?
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
        .options(&servers)?
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

/// Signs an approval (or denial) of a pending action and sends it to the responder on
/// `osprey.responder.approvals`; returns the responder's answer, one sentence (`approved: ...`,
/// `denied: ...`, or why it was not carried out). A responder not listening yet (restarting)
/// is waited for up to `wait`; no answer is an error, as the approval may or may not have been
/// taken (sending it again would be refused as a replay).
pub async fn send_approval(
    client: &Client,
    operator: &Operator<'_>,
    pending_id: &str,
    verdict: Verdict,
    wait: Duration,
) -> Result<ApprovalAnswer, ClientError> {
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
    let payload = bytes::Bytes::from(protocol::encode(&approval)?);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let sent = request(
            client,
            subject::APPROVALS.to_string(),
            payload.clone(),
            "the responder",
            APPROVAL_TIMEOUT,
        )
        .await;
        match sent {
            Ok(reply) => {
                return Ok(ApprovalAnswer {
                    text: String::from_utf8_lossy(&reply).into_owned(),
                })
            }
            Err(ClientError::NoResponders { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Longest the responder may take to answer an approval (it sends the command first).
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(40);

/// What the responder did with an approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalAnswer {
    pub text: String,
}

impl ApprovalAnswer {
    /// The approved action was sent, or the denied one dropped.
    pub fn carried_out(&self) -> bool {
        self.text.starts_with("approved:") || self.text.starts_with("denied:")
    }
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
    payload: impl Into<bytes::Bytes>,
    who: &str,
    timeout: Duration,
) -> Result<bytes::Bytes, ClientError> {
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    match client.send_request(subject.clone(), request).await {
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

/// The findings stream `OSPREY_FINDINGS`, checked (bus::stream), created the way collectors
/// create it when it is missing and this operator may.
pub async fn findings_stream(client: &Client) -> Result<jetstream::stream::Stream, ClientError> {
    let js = jetstream::new(client.clone());
    bus::stream::open_findings(
        &js,
        client,
        &bus::FindingsStream::default(),
        bus::IfMissing::Create,
    )
    .await
    .map_err(|e| ClientError::Stream {
        stream: subject::FINDINGS_STREAM.to_string(),
        reason: e.to_string(),
    })
}
