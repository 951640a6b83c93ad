//! The JetStream stream `OSPREY_FINDINGS`: how it is created, and what an existing one must
//! be for collectors to publish to it and the responder to read it. A stream that fails the
//! check is refused with every problem named, never used as it is: a work-queue stream would
//! delete findings other consumers have not read, a global message limit would let one
//! flooding host push every other host's findings out, roll-up headers would let a host purge
//! the stream.

use std::{fmt, time::Duration};

use async_nats::jetstream::{
    self,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream, ErrorCode,
};
use protocol::subject;

/// What `OSPREY_FINDINGS` is made of when Osprey creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingsStream {
    /// JetStream de-duplicates re-sent findings (by their message id) within this window.
    pub duplicate_window: Duration,
    /// Per subject, i.e. per host and severity: a host flooding findings only pushes out its
    /// own oldest findings of that severity.
    pub max_messages_per_subject: i64,
    pub max_age: Duration,
    pub replicas: Replicas,
}

/// How many copies a created stream keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// 3 when the server is in a cluster of at least 3 servers, else 1.
    Auto,
    Exactly(usize),
}

impl FindingsStream {
    /// The shortest duplicate window accepted: a lost PubAck is retried within seconds, and
    /// two minutes is JetStream's own default.
    pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
    pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_MAX_MESSAGES_PER_SUBJECT: i64 = 50_000;
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

    /// The configuration a new stream gets, with `replicas` copies.
    pub fn config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: subject::FINDINGS_STREAM.to_string(),
            subjects: vec![subject::FINDINGS_WILDCARD.to_string()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_messages_per_subject: self.max_messages_per_subject,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            num_replicas: replicas,
            deny_delete: true,
            description: Some("Osprey findings (published by collectors)".to_string()),
            ..Default::default()
        }
    }
}

impl Default for FindingsStream {
    fn default() -> Self {
        FindingsStream {
            duplicate_window: Self::DEFAULT_DUPLICATE_WINDOW,
            max_messages_per_subject: Self::DEFAULT_MAX_MESSAGES_PER_SUBJECT,
            max_age: Self::DEFAULT_MAX_AGE,
            replicas: Replicas::Auto,
        }
    }
}

/// Why an existing `OSPREY_FINDINGS` cannot be used: every problem, each in one sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongStream(pub Vec<String>);

impl fmt::Display for WrongStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} is not usable as Osprey's findings stream: {} (fix or delete it; \
             docs/nats.md says what it must be)",
            subject::FINDINGS_STREAM,
            self.0.join("; ")
        )
    }
}

impl std::error::Error for WrongStream {}

/// Checks an existing stream's configuration; `Err` names every problem.
pub fn check(config: &stream::Config) -> Result<(), WrongStream> {
    let mut problems = Vec::new();
    if config.subjects != [subject::FINDINGS_WILDCARD] {
        problems.push(format!(
            "its subjects are {:?}, they must be exactly [\"{}\"]",
            config.subjects,
            subject::FINDINGS_WILDCARD
        ));
    }
    if config.retention != stream::RetentionPolicy::Limits {
        problems.push(format!(
            "its retention is {:?}: it must be limits (work-queue and interest retention delete \
             findings once one consumer has them)",
            config.retention
        ));
    }
    if config.storage != stream::StorageType::File {
        problems.push("it is kept in memory: findings must be on disk".to_string());
    }
    if config.duplicate_window < FindingsStream::MIN_DUPLICATE_WINDOW {
        problems.push(format!(
            "its duplicate window is {}s, at least {}s is needed to de-duplicate re-sent findings",
            config.duplicate_window.as_secs(),
            FindingsStream::MIN_DUPLICATE_WINDOW.as_secs()
        ));
    }
    if config.max_messages_per_subject <= 0 {
        problems.push(
            "it has no per-subject message limit (max_msgs_per_subject): one host's flood \
             could fill it"
                .to_string(),
        );
    }
    if config.max_messages > 0 || config.max_bytes > 0 {
        problems.push(format!(
            "it has a stream-wide limit (max_msgs {}, max_bytes {}): one host's flood would push \
             other hosts' findings out; bound it per subject and by age instead",
            config.max_messages, config.max_bytes
        ));
    }
    if config.allow_rollup {
        problems.push(
            "it allows roll-up headers: a host could purge the stream with one message".to_string(),
        );
    }
    if config.no_ack {
        problems.push(
            "it does not acknowledge publishes (no_ack): findings would leave the spool unconfirmed"
                .to_string(),
        );
    }
    if config.sealed {
        problems.push("it is sealed: nothing can be published to it".to_string());
    }
    if config.mirror.is_some() {
        problems.push("it is a mirror: nothing can be published to it".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WrongStream(problems))
    }
}

/// How many servers the connected server's cluster has, as its INFO lists their client URLs
/// (1 for a lone server).
pub fn cluster_size(client: &async_nats::Client) -> usize {
    client.server_info().connect_urls.len().max(1)
}

impl Replicas {
    pub fn resolve(self, client: &async_nats::Client) -> usize {
        match self {
            Replicas::Exactly(n) => n,
            Replicas::Auto if cluster_size(client) >= 3 => 3,
            Replicas::Auto => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Wrong(#[from] WrongStream),
    #[error("stream OSPREY_FINDINGS does not exist")]
    Missing,
    #[error(
        "stream OSPREY_FINDINGS does not exist and this account may not create it (the responder creates it)"
    )]
    MayNotCreate,
    #[error("cannot look up stream OSPREY_FINDINGS: {0}")]
    Lookup(#[from] jetstream::context::GetStreamError),
    #[error("cannot create stream OSPREY_FINDINGS: {0}")]
    Create(#[from] jetstream::context::CreateStreamError),
}

/// Whether a missing stream is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMissing {
    Create,
    Fail,
}

/// Opens `OSPREY_FINDINGS` after checking it, creating it from `spec` when it is missing and
/// `if_missing` says so. A stream another client creates meanwhile is picked up.
pub async fn open_findings(
    js: &jetstream::Context,
    client: &async_nats::Client,
    spec: &FindingsStream,
    if_missing: IfMissing,
) -> Result<stream::Stream, OpenError> {
    for _ in 0..3 {
        match js.get_stream(subject::FINDINGS_STREAM).await {
            Ok(stream) => {
                check(&stream.cached_info().config)?;
                return Ok(stream);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if if_missing == IfMissing::Fail {
            return Err(OpenError::Missing);
        }
        let config = spec.config(spec.replicas.resolve(client));
        match js.create_stream(config).await {
            Ok(stream) => return Ok(stream),
            // Someone else created it meanwhile: look it up (and check it) again.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                {}
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::TimedOut) => {
                // A create this account may not make goes unanswered.
                return Err(OpenError::MayNotCreate);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let stream = js.get_stream(subject::FINDINGS_STREAM).await?;
    check(&stream.cached_info().config)?;
    Ok(stream)
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_stream_passes_its_own_check() {
        let config = FindingsStream::default().config(1);
        assert_eq!(check(&config), Ok(()));
        assert!(config.deny_delete && !config.allow_rollup);
    }

    #[test]
    fn every_problem_of_a_wrong_stream_is_named() {
        let config = stream::Config {
            name: subject::FINDINGS_STREAM.into(),
            subjects: vec!["osprey.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::Memory,
            duplicate_window: Duration::from_secs(30),
            max_messages: 1000,
            allow_rollup: true,
            ..Default::default()
        };
        let WrongStream(problems) = check(&config).unwrap_err();
        let text = problems.join("\n");
        for needle in [
            "subjects",
            "retention",
            "memory",
            "duplicate window is 30s",
            "per-subject",
            "stream-wide limit",
            "roll-up",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert_eq!(problems.len(), 7);
    }
}
