//! One-shot operator commands: `osprey kill|suspend|resume|quarantine EXECID --host H`,
//! `osprey block|unblock DEST[:PORT] --host H`, `osprey release ID --host H`. Each is signed
//! with the operator's key, goes through every check of the host's actuator, is audited there
//! with the key's id, and prints the host's answer.

use std::{process::ExitCode, time::Duration};

use protocol::{Action, CommandResult, CommandStatus, ExecId};

use crate::operator::{KeyArgs, NatsArgs};

/// Where a command goes and how its answer is shown.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The host (as its collector names itself).
    #[arg(long)]
    pub host: String,
    /// Print the host's answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The process (its ExecId, as `osprey ps` or a finding shows it).
    pub exec_id: ExecId,
    /// Also every descendant, each identity-checked (the tree is stopped first).
    #[arg(long)]
    pub tree: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct SuspendArgs {
    pub exec_id: ExecId,
    /// Resume it by itself after this long (e.g. `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    pub exec_id: ExecId,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    /// Address or network, with an optional port: `203.0.113.7`, `203.0.113.0/24:443`,
    /// `[2001:db8::1]:443`.
    #[arg(value_parser = parse_destination)]
    pub destination: Destination,
    /// Lift the block by itself after this long (e.g. `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct UnblockArgs {
    /// As given to `osprey block`.
    #[arg(value_parser = parse_destination)]
    pub destination: Destination,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The quarantine id (the command's answer and the audit record name it; on the host,
    /// `osprey quarantine list`).
    pub id: String,
    #[command(flatten)]
    pub common: Common,
}

/// A destination to block: a network and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub cidr: String,
    pub port: Option<u16>,
}

pub fn parse_destination(text: &str) -> Result<Destination, String> {
    let bad =
        || format!("{text:?} is not ADDRESS[/PREFIX][:PORT] (IPv6 with a port: [ADDRESS]:PORT)");
    let (net, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (inner, port)
    } else if text.matches(':').count() > 1 {
        (text, None) // a bare IPv6 address or network
    } else {
        match text.rsplit_once(':') {
            Some((net, port)) => (net, Some(port)),
            None => (text, None),
        }
    };
    let net = protocol::net::parse_net(net).ok_or_else(bad)?;
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))
        })
        .transpose()?;
    Ok(Destination {
        cidr: net.to_string(),
        port,
    })
}

fn ttl_secs(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| d.as_secs().max(1))
}

pub async fn kill(args: KillArgs) -> anyhow::Result<ExitCode> {
    let action = Action::Kill {
        target: args.exec_id,
        tree: args.tree,
    };
    send(&args.common, action).await
}

pub async fn suspend(args: SuspendArgs) -> anyhow::Result<ExitCode> {
    let action = Action::Suspend {
        target: args.exec_id,
        ttl_secs: ttl_secs(args.ttl),
    };
    send(&args.common, action).await
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    send(
        &args.common,
        Action::Resume {
            target: args.exec_id,
        },
    )
    .await
}

pub async fn block(args: BlockArgs) -> anyhow::Result<ExitCode> {
    let action = Action::Block {
        cidr: args.destination.cidr,
        port: args.destination.port,
        ttl_secs: ttl_secs(args.ttl),
    };
    send(&args.common, action).await
}

pub async fn unblock(args: UnblockArgs) -> anyhow::Result<ExitCode> {
    let action = Action::Unblock {
        cidr: args.destination.cidr,
        port: args.destination.port,
    };
    send(&args.common, action).await
}

pub async fn release(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    send(&args.common, Action::Release { id: args.id }).await
}

/// Quarantine of a process's executable (or a path) on a host.
pub async fn quarantine(
    exec_id: Option<ExecId>,
    path: Option<String>,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        exec_id.is_some() || path.is_some(),
        "name the process (EXECID) or the file (--path)"
    );
    send(
        common,
        Action::Quarantine {
            target: exec_id,
            path,
        },
    )
    .await
}

async fn send(common: &Common, action: Action) -> anyhow::Result<ExitCode> {
    let key = common.key.load()?;
    let client = common.nats.connect("osprey-operator", false).await?;
    let result = crate::operator::command(&client, &key, &common.host, action).await?;
    if common.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", result_line(&result));
    }
    Ok(match result.status {
        CommandStatus::Ok => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// `executed on H: ...`, `refused by H: ...`, `failed on H: ...`.
pub fn result_line(r: &CommandResult) -> String {
    let mut line = match r.status {
        CommandStatus::Ok => format!("executed on {}: {}", r.host, r.reason),
        CommandStatus::Refused => format!("refused by {}: {}", r.host, r.reason),
        CommandStatus::Failed => format!("failed on {}: {}", r.host, r.reason),
    };
    if let Some(output) = &r.output {
        line.push_str(&format!(" (output: {output})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_with_and_without_ports() {
        let d = |cidr: &str, port: Option<u16>| Destination {
            cidr: cidr.into(),
            port,
        };
        assert_eq!(
            parse_destination("127.0.0.2:8080"),
            Ok(d("127.0.0.2/32", Some(8080)))
        );
        assert_eq!(parse_destination("10.1.2.0/24"), Ok(d("10.1.2.0/24", None)));
        assert_eq!(
            parse_destination("10.1.2.0/24:443"),
            Ok(d("10.1.2.0/24", Some(443)))
        );
        assert_eq!(
            parse_destination("2001:db8::1"),
            Ok(d("2001:db8::1/128", None))
        );
        assert_eq!(
            parse_destination("[2001:db8::1]:443"),
            Ok(d("2001:db8::1/128", Some(443)))
        );
        assert!(parse_destination("example.com")
            .unwrap_err()
            .contains("ADDRESS"));
        assert!(parse_destination("1.2.3.4:http")
            .unwrap_err()
            .contains("port"));
        assert!(parse_destination("[::1]x").is_err());
    }
}
