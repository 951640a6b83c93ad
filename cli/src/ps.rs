//! `osprey ps`: one snapshot of a host's live processes as a table (or JSON), then exit.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
};

use protocol::{ProcessFilter, ProcessState, Query, QueryKind, Severity, Snapshot, SortKey};

use crate::{operator::NatsArgs, render};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// The host (as its collector names itself). Default: this machine.
    #[arg(long)]
    pub host: Option<String>,
    /// At most this many processes (the host caps a page at 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Skip this many (the next page).
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Only processes at this risk or above (info, low, medium, high, critical).
    #[arg(long)]
    pub risk: Option<Severity>,
    /// Only processes of this user (name or uid).
    #[arg(long)]
    pub user: Option<String>,
    /// Only processes whose executable, arguments or user contain this (any case).
    #[arg(long)]
    pub text: Option<String>,
    /// Only this process.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long, value_enum, default_value_t = Sort::Risk)]
    pub sort: Sort,
    /// The host's answer (`Snapshot`) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Sort {
    Risk,
    Cpu,
    Rss,
    Age,
    Pid,
}

impl From<Sort> for SortKey {
    fn from(s: Sort) -> SortKey {
        match s {
            Sort::Risk => SortKey::Risk,
            Sort::Cpu => SortKey::Cpu,
            Sort::Rss => SortKey::Rss,
            Sort::Age => SortKey::Age,
            Sort::Pid => SortKey::Pid,
        }
    }
}

pub async fn run(args: PsArgs) -> anyhow::Result<ExitCode> {
    let host = args
        .host
        .clone()
        .unwrap_or_else(crate::operator::local_host);
    let client = args.nats.connect("osprey-ps", false).await?;
    let query = Query {
        kind: QueryKind::Processes(ProcessFilter {
            min_risk: args.risk,
            user: args.user.clone(),
            text: args.text.clone(),
            pid: args.pid,
            sort: args.sort.into(),
            offset: args.offset,
            limit: args.limit.max(1),
        }),
    };
    let snapshot = client::query(&client, &host, &query, client::QUERY_TIMEOUT).await?;
    print(&snapshot, Columns::Activity, args.json)?;
    if args.json {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{}", footer(&snapshot, &host));
    Ok(ExitCode::SUCCESS)
}

/// The snapshot on stdout: as JSON, or as a table cut to the terminal's width and coloured
/// by risk on a terminal.
pub fn print(snapshot: &Snapshot, columns: Columns, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(snapshot)?)?;
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let width = terminal
        .then(|| ratatui::crossterm::terminal::size().ok())
        .flatten()
        .map(|(w, _)| w as usize);
    for line in table(snapshot, columns, width, render::colour_wanted(terminal)) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// What a table shows besides risk, pid, user and command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    /// `osprey ps`: CPU, RSS, connections, findings.
    Activity,
    /// `osprey scan`: RSS, the executable's hash and its threat-intelligence verdict.
    Intel,
}

impl Columns {
    fn header(self) -> &'static str {
        match self {
            Columns::Activity => "RISK      PID     USER       CPU%    RSS  CONN  FIND  COMMAND",
            Columns::Intel => {
                "RISK      PID     USER          RSS  SHA256        INTEL       FIND  COMMAND"
            }
        }
    }
}

/// The header and one line per process; the command is cut to `width` when given.
pub fn table(
    snapshot: &Snapshot,
    columns: Columns,
    width: Option<usize>,
    colour: bool,
) -> Vec<String> {
    let mut lines = vec![columns.header().to_string()];
    for p in &snapshot.processes {
        lines.push(row(p, columns, width, colour));
    }
    lines
}

fn row(p: &ProcessState, columns: Columns, width: Option<usize>, colour: bool) -> String {
    let user = p
        .process
        .user
        .clone()
        .unwrap_or_else(|| p.process.uid.to_string());
    let risk = p.risk.level.as_str().to_ascii_uppercase();
    let user = render::truncate(&render::clean(&user), 9);
    let rss = p.rss_bytes.map_or("-".into(), render::bytes);
    let fixed = match columns {
        Columns::Activity => format!(
            "{risk:<8} {:>5} {user:<10} {:>5} {rss:>6} {:>5} {:>5}  ",
            p.process.pid,
            p.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            p.connections.len(),
            p.findings.len(),
        ),
        Columns::Intel => format!(
            "{risk:<8} {:>5} {user:<10} {rss:>6}  {:<12}  {:<10} {:>5}  ",
            p.process.pid,
            // A prefix, as git shows commits: enough to tell executables apart.
            p.process
                .sha256
                .as_deref()
                .and_then(|h| h.get(..12))
                .unwrap_or("-"),
            intel_text(p),
            p.findings.len(),
        ),
    };
    let command = command_text(p);
    let command = match width {
        // One column spare (some terminals wrap a line that fills the last one), and one for
        // the ellipsis.
        Some(w) => render::truncate(&command, w.saturating_sub(fixed.chars().count() + 2).max(8)),
        None => command,
    };
    let line = format!("{fixed}{command}");
    if colour && p.risk.level > Severity::Info {
        format!("{}{line}{}", render::colour(p.risk.level), render::RESET)
    } else {
        line
    }
}

/// `5/70 det` for a VirusTotal verdict with detections, `clean` without, `unknown` for a
/// file VirusTotal has never seen, the feed's name for a feed match, `-` when not looked up.
fn intel_text(p: &ProcessState) -> String {
    let Some(v) = &p.intel else {
        return "-".into();
    };
    let text = match (v.source.as_str(), v.detections()) {
        ("virustotal", _) if v.link.is_none() => "unknown".to_string(),
        ("virustotal", 0) => "clean".to_string(),
        ("virustotal", n) => format!("{n}/{} det", v.engines),
        (feed, _) => feed.to_string(),
    };
    render::truncate(&render::clean(&text), 10)
}

/// The argv (escaped), or the executable when the argv is empty.
pub fn command_text(p: &ProcessState) -> String {
    let line = p.process.command_line();
    let text = if line.is_empty() {
        p.process.exe.clone()
    } else {
        line
    };
    render::clean(&text).into_owned()
}

fn footer(s: &Snapshot, host: &str) -> String {
    let mut text = format!("{} of {} processes on {host}", s.processes.len(), s.total);
    if let Some(note) = &s.note {
        text.push_str(&format!(" ({note})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;

    fn state(pid: u32, level: Severity, argv: &str) -> ProcessState {
        ProcessState {
            process: Process {
                user: Some("root".into()),
                ..Process::new(
                    format!("00000001-{pid}-1-0").parse().unwrap(),
                    "/usr/bin/python3",
                    argv.split(' ').map(String::from).collect(),
                )
            },
            ancestry: vec![],
            age_secs: 5,
            exited: false,
            cpu_percent: Some(12.5),
            rss_bytes: Some(9 << 20),
            connections: vec![],
            findings: vec![],
            intel: None,
            risk: Risk {
                level,
                reasons: vec![],
            },
        }
    }

    #[test]
    fn rows_cut_to_the_terminal_and_colour_by_risk() {
        let snapshot = Snapshot {
            host: "h".into(),
            time: Timestamp::now(),
            total: 2,
            processes: vec![
                state(
                    7,
                    Severity::High,
                    &format!("python3 -c {}", "x".repeat(200)),
                ),
                state(8, Severity::Info, "python3 \x1b[2J"),
            ],
            note: None,
        };
        let lines = table(&snapshot, Columns::Activity, Some(80), true);
        assert_eq!(lines[0], Columns::Activity.header());
        assert!(lines[1].starts_with("\x1b[31mHIGH"), "{}", lines[1]);
        assert!(
            lines[1].contains("12.5") && lines[1].contains("9.0M"),
            "{}",
            lines[1]
        );
        let visible = lines[1]
            .trim_start_matches("\x1b[31m")
            .trim_end_matches(render::RESET);
        assert_eq!(visible.chars().count(), 79, "{visible}");
        assert!(
            !lines[2].contains('\x1b') && lines[2].contains("\\u{1b}[2J"),
            "{}",
            lines[2]
        );
        let plain = table(&snapshot, Columns::Activity, None, false);
        assert!(plain[1].ends_with(&"x".repeat(200)));
    }
}
