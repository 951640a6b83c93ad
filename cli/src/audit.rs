//! The audit trail as operators read it: `osprey audit [--follow] [--host H]` and
//! `osprey approvals` (the actions awaiting an operator, derived from the trail).
//!
//! Records come from the audit files on this machine (the actuator's and the responder's,
//! JSON lines) and, with `--follow`, live from NATS: `osprey.audit` and `osprey.audit.>` (a
//! record per source and host), so both layouts of the trail are read.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use futures::{stream::BoxStream, StreamExt};
use protocol::{subject, AuditRecord, Decision, Verdict};

use crate::{
    operator::{KeyArgs, NatsArgs},
    render,
};

/// Where the actuator and the responder write their trails by default.
pub const DEFAULT_FILES: [&str; 2] = [
    "/var/log/osprey/actuator-audit.jsonl",
    "/var/log/osprey/responder-audit.jsonl",
];

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// After the records in the files, print new ones as hosts and the responder publish
    /// them, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// Only records about this host.
    #[arg(long)]
    pub host: Option<String>,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
    /// Audit files to read (repeatable). Default: the actuator's and the responder's default
    /// files, those present on this machine.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    pub command: Option<ApprovalsCommand>,
    /// Audit files to read (repeatable); default as for `osprey audit`.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Keep watching: print each action as it starts or stops waiting.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Approve a pending action (as `osprey approve ID`).
    Approve(ApprovalArgs),
    /// Deny a pending action (as `osprey deny ID`).
    Deny(ApprovalArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApprovalArgs {
    /// The pending action's id (from its `awaiting_approval` audit record).
    pub id: String,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Seconds to wait for a responder to listen (e.g. while it restarts).
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
}

/// Records of `files` (or of the default files present), oldest first. A line that is not a
/// record is reported and skipped.
pub fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<AuditRecord>> {
    let explicit = !files.is_empty();
    let files: Vec<PathBuf> = if explicit {
        files.to_vec()
    } else {
        DEFAULT_FILES.iter().map(PathBuf::from).collect()
    };
    let mut out = Vec::new();
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<AuditRecord>(line) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("{}:{}: not an audit record: {e}", path.display(), n + 1),
            }
        }
    }
    out.sort_by_key(|r| r.time);
    Ok(out)
}

/// Audit records as they are published.
pub async fn subscribe(
    client: &async_nats::Client,
) -> anyhow::Result<BoxStream<'static, AuditRecord>> {
    let records = client.subscribe(subject::AUDIT_WILDCARD).await?;
    client.flush().await?;
    Ok(records
        .filter_map(|m| async move {
            match protocol::decode::<AuditRecord>(&m.payload) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(subject = %m.subject, "not an audit record: {e}");
                    None
                }
            }
        })
        .boxed())
}

fn about_host(r: &AuditRecord, host: Option<&str>) -> bool {
    host.is_none_or(|h| subject::host_token(&r.host) == subject::host_token(h))
}

/// `time host source action target DECISION: reason [by key …]`.
pub fn line(r: &AuditRecord, colour: bool) -> String {
    let mut text = format!(
        "{} {} {} {} {} {}: {}",
        render::short_time(r.time),
        render::clean(&r.host),
        r.source,
        r.action,
        render::clean(r.target.as_deref().unwrap_or("-")),
        r.decision.as_str().to_ascii_uppercase(),
        render::clean(&r.reason),
    );
    if let Some(key) = &r.actor.key_id {
        text.push_str(&format!(" [key {}]", short_key(key)));
    }
    if let Some(id) = &r.pending_id {
        text.push_str(&format!(" [pending {id}]"));
    }
    if let Some(id) = &r.investigation_id {
        text.push_str(&format!(" [investigation {id}]"));
    }
    if !colour {
        return text;
    }
    let sgr = match r.decision {
        Decision::Executed | Decision::Approved => "\x1b[32m",
        Decision::Refused | Decision::Denied | Decision::Failed => "\x1b[31m",
        Decision::AwaitingApproval | Decision::RateLimited | Decision::Unknown => "\x1b[33m",
        Decision::DryRun | Decision::RolledBack | Decision::Expired | Decision::Proposed => {
            "\x1b[2m"
        }
    };
    format!("{sgr}{text}{}", render::RESET)
}

/// The first characters of a base64 key: enough to tell operators apart.
pub fn short_key(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let colour = render::colour_wanted(std::io::stdout().is_terminal());
    let print = |r: &AuditRecord| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
        } else {
            writeln!(out, "{}", line(r, colour))?;
        }
        out.flush()
    };
    let host = args.host.as_deref();
    let stored = read_files(&args.files)?;
    if stored.is_empty() && !args.follow {
        eprintln!(
            "no audit records in {} (on the host, or where the responder runs); \
             --follow shows records as they are published",
            if args.files.is_empty() {
                DEFAULT_FILES.join(", ")
            } else {
                "the files given".into()
            }
        );
    }
    for r in stored.iter().filter(|r| about_host(r, host)) {
        print(r)?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.nats.connect("osprey-audit", true).await?;
    let mut live = subscribe(&client).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            r = live.next() => match r {
                Some(r) if about_host(&r, host) => match print(&r) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    other => other?,
                },
                Some(_) => {}
                None => break,
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Actions awaiting an operator, from the trail: a pending id whose latest record is
/// `awaiting_approval` (any later record — approved, denied, expired — settles it).
#[derive(Default)]
pub struct Approvals {
    latest: HashMap<String, AuditRecord>,
}

impl Approvals {
    /// Takes in a record; returns whether it changed what is pending.
    pub fn observe(&mut self, r: &AuditRecord) -> bool {
        let Some(id) = &r.pending_id else {
            return false;
        };
        match self.latest.get(id) {
            Some(known) if known.time > r.time => false,
            _ => {
                self.latest.insert(id.clone(), r.clone());
                true
            }
        }
    }

    /// Pending actions, oldest first.
    pub fn pending(&self) -> Vec<&AuditRecord> {
        let mut out: Vec<&AuditRecord> = self
            .latest
            .values()
            .filter(|r| r.decision == Decision::AwaitingApproval)
            .collect();
        out.sort_by_key(|r| r.time);
        out
    }
}

/// `ID  time host action target  reason`.
pub fn pending_line(r: &AuditRecord) -> String {
    format!(
        "{}  {} {} {} {}  {}",
        r.pending_id.as_deref().unwrap_or("-"),
        render::short_time(r.time),
        render::clean(&r.host),
        r.action,
        render::clean(r.target.as_deref().unwrap_or("-")),
        render::clean(&r.reason),
    )
}

pub async fn approvals(args: ApprovalsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ApprovalsCommand::Approve(a)) => return approval(a, Verdict::Approve).await,
        Some(ApprovalsCommand::Deny(a)) => return approval(a, Verdict::Deny).await,
        None => {}
    }
    let mut approvals = Approvals::default();
    for r in read_files(&args.files)? {
        approvals.observe(&r);
    }
    let pending = approvals.pending();
    if pending.is_empty() {
        eprintln!("no action awaits approval");
    }
    for r in pending {
        println!("{}", pending_line(r));
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.nats.connect("osprey-approvals", true).await?;
    let mut live = subscribe(&client).await?;
    while let Some(r) = live.next().await {
        if approvals.observe(&r) {
            match r.decision {
                Decision::AwaitingApproval => println!("{}", pending_line(&r)),
                d => println!("{}  {}", r.pending_id.as_deref().unwrap_or("-"), d.as_str()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `osprey approve|deny ID` (and `osprey approvals approve|deny ID`).
pub async fn approval(args: ApprovalArgs, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let key = args.key.load()?;
    let client = args.nats.connect("osprey-approval", false).await?;
    let answer = client::send_approval(
        &client,
        &crate::operator::KeyArgs::operator(&key),
        &args.id,
        verdict,
        std::time::Duration::from_secs(args.wait_secs),
    )
    .await
    .map_err(|e| match e {
        client::ClientError::Timeout { .. } => anyhow::anyhow!(
            "no answer from the responder ({e}): the {verdict:?} may or may not have been taken; see its audit trail"
        ),
        e => e.into(),
    })?;
    println!("{}: {}", args.id, answer.text);
    if !answer.carried_out() {
        anyhow::bail!("the responder did not carry it out");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Timestamp;

    fn record(pending: &str, decision: Decision, at: i64) -> AuditRecord {
        let mut r = AuditRecord::new("responder", "h", "kill", decision, "why", "-");
        r.pending_id = Some(pending.into());
        r.time = Timestamp::from_unix_nanos(at);
        r
    }

    #[test]
    fn pending_actions_are_the_ones_not_settled_yet() {
        let mut a = Approvals::default();
        assert!(!a.observe(&AuditRecord::new(
            "actuator",
            "h",
            "kill",
            Decision::Executed,
            "",
            ""
        )));
        a.observe(&record("p1", Decision::AwaitingApproval, 1));
        a.observe(&record("p2", Decision::AwaitingApproval, 2));
        a.observe(&record("p1", Decision::Approved, 3));
        // An older record arriving late changes nothing.
        assert!(!a.observe(&record("p1", Decision::AwaitingApproval, 0)));
        let ids: Vec<_> = a
            .pending()
            .iter()
            .map(|r| r.pending_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["p2"]);
    }

    #[test]
    fn lines_name_the_operator_key_and_escape_what_hosts_wrote() {
        let mut r = record("p9", Decision::Refused, 0);
        r.actor.key_id = Some("ABCDEFGHIJKLMNOP".into());
        r.reason = "pid 1 is protected\x1b[2J".into();
        let text = line(&r, false);
        assert!(
            text.contains("REFUSED: pid 1 is protected\\u{1b}[2J [key ABCDEFGHIJKL]"),
            "{text}"
        );
        assert!(line(&r, true).starts_with("\x1b[31m"));
        r.investigation_id = Some("inv7".into());
        assert!(line(&r, false).ends_with("[pending p9] [investigation inv7]"));
    }
}
