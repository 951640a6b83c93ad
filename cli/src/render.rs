//! One readable line per finding or event, for `osprey tail`.

use std::{borrow::Cow, fmt::Write as _, net::SocketAddr};

use protocol::{
    CloseEvent, ConnectEvent, Event, EventDetail, ExitEvent, Finding, Outcome, Process, Severity,
    Timestamp,
};

/// Command lines longer than this (in characters) are cut, so a line stays one screen line.
const COMMAND_LINE_CHARS: usize = 120;
pub const RESET: &str = "\x1b[0m";

/// Colour on a stream: only a terminal, and only when `NO_COLOR` is unset or empty
/// (no-color.org).
pub fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// `712.4M`, `3.1G`, `880K`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// `45s`, `12m`, `3h`, `5d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// SGR sequence for a severity.
pub fn colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "\x1b[1;35m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
        Severity::Info => "\x1b[2m",
    }
}

/// `time host SEVERITY rule: title | name[pid] exec-id | trigger`, coloured by severity when
/// `colour` is set.
pub fn finding_line(finding: &Finding, use_colour: bool) -> String {
    let mut line = String::with_capacity(256);
    let _ = write!(
        line,
        "{} {} {:<8} {}: {} | {} | {}",
        short_time(finding.time),
        clean(&finding.host),
        finding.severity.as_str().to_ascii_uppercase(),
        clean(&finding.rule_id),
        clean(&finding.title),
        process_label(&finding.process),
        finding_trigger(finding),
    );
    if use_colour {
        format!("{}{line}{RESET}", colour(finding.severity))
    } else {
        line
    }
}

/// `time host kind name[pid] exec-id detail`.
pub fn event_line(event: &Event) -> String {
    let detail = match &event.detail {
        EventDetail::Exec(_) => command_line(&event.process),
        EventDetail::Connect(connect) => connect_text(connect),
        EventDetail::Close(close) => close_text(close, event.time),
        EventDetail::Exit(exit) => exit_text(exit),
        EventDetail::Fork(_) => format!("forked from pid {}", event.process.ppid),
        EventDetail::MemorySample(sample) => memory_text(sample.rss_bytes),
        EventDetail::IntelVerdict(v) => intel_text(v),
    };
    format!(
        "{} {} {:<8} {} | {}",
        short_time(event.time),
        clean(&event.host),
        event.kind().as_str(),
        process_label(&event.process),
        detail
    )
}

/// The key trigger: the destination of a connection, how a process ended, or the command
/// line for everything else.
fn finding_trigger(finding: &Finding) -> String {
    match finding.triggers.first().map(|trigger| &trigger.detail) {
        Some(EventDetail::Connect(connect)) => connect_text(connect),
        Some(EventDetail::Close(close)) => close_text(close, finding.time),
        Some(EventDetail::Exit(exit)) => exit_text(exit),
        Some(EventDetail::MemorySample(sample)) => memory_text(sample.rss_bytes),
        Some(EventDetail::IntelVerdict(v)) => intel_text(v),
        Some(EventDetail::Exec(_) | EventDetail::Fork(_)) | None => command_line(&finding.process),
    }
}

/// `resident 712.4 MiB`
fn memory_text(rss_bytes: u64) -> String {
    format!("resident {:.1} MiB", rss_bytes as f64 / (1024.0 * 1024.0))
}

fn intel_text(v: &protocol::IntelVerdictEvent) -> String {
    let mut text = format!("{} says sha256 {}", v.source, v.sha256);
    if v.engines > 0 {
        text.push_str(&format!(
            ": {} malicious, {} suspicious of {} engines",
            v.malicious, v.suspicious, v.engines
        ));
    }
    if let Some(link) = &v.link {
        text.push_str(&format!(" ({link})"));
    }
    text
}

fn process_label(process: &Process) -> String {
    format!(
        "{}[{}] {}",
        clean(&process.name),
        process.pid,
        process.exec_id
    )
}

/// `-x 93.184.216.34:443/tcp after 2.0 s, sent 1234 B, received 5678 B`
fn close_text(close: &CloseEvent, closed: Timestamp) -> String {
    let destination = SocketAddr::new(close.destination_ip, close.destination_port);
    let secs = closed
        .unix_nanos()
        .saturating_sub(close.established.unix_nanos()) as f64
        / 1e9;
    format!(
        "-x {destination}/{} after {secs:.1} s, sent {} B, received {} B",
        close.protocol.as_str(),
        close.bytes_sent,
        close.bytes_received
    )
}

fn connect_text(connect: &ConnectEvent) -> String {
    let destination = SocketAddr::new(connect.destination_ip, connect.destination_port);
    let mut text = format!(
        "-> {destination}/{} {}",
        connect.protocol.as_str(),
        outcome_str(connect.outcome)
    );
    if let Some(errno) = connect.errno {
        let _ = write!(text, " (errno {errno})");
    }
    text
}

pub fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
        Outcome::TimedOut => "timed_out",
        Outcome::Denied => "denied",
        Outcome::Error => "error",
        Outcome::Pending => "pending",
    }
}

fn exit_text(exit: &ExitEvent) -> String {
    let mut text = match (exit.exit_code, exit.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "exited".to_string(),
    };
    if exit.core_dumped {
        text.push_str(" (core dumped)");
    }
    text
}

fn command_line(process: &Process) -> String {
    let mut text = truncate(&clean(&process.command_line()), COMMAND_LINE_CHARS);
    if process.argv_truncated && !text.ends_with('…') {
        text.push('…');
    }
    text
}

pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Escapes control characters: argv and names come from watched processes, which must not be
/// able to drive the operator's terminal.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// UTC, millisecond precision: `2024-05-01 12:34:56.789Z`.
pub fn short_time(time: Timestamp) -> String {
    chrono::DateTime::from_timestamp_nanos(time.unix_nanos())
        .format("%Y-%m-%d %H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;

    fn process(argv: Vec<String>) -> Process {
        Process {
            ppid: 1,
            ..Process::new(
                "0000abcd-4242-777-1".parse().unwrap(),
                "/usr/bin/python3",
                argv,
            )
        }
    }

    fn connect(ip: &str) -> EventDetail {
        EventDetail::Connect(ConnectEvent {
            family: SocketFamily::Ipv6,
            protocol: TransportProtocol::Tcp,
            destination_ip: ip.parse().unwrap(),
            destination_port: 443,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Refused,
            errno: Some(111),
            hook: ConnectHook::Connect,
            late_outcome: false,
        })
    }

    fn finding(severity: Severity, triggers: Vec<Trigger>, argv: Vec<String>) -> Finding {
        let process = process(argv);
        Finding {
            id: FindingId::new(
                "web-1",
                &process.exec_id,
                Detector::Heuristic,
                "script-egress",
            ),
            time: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
            host: "web-1".into(),
            detector: Detector::Heuristic,
            rule_id: "script-egress".into(),
            title: "Script engine connected out".into(),
            description: None,
            author: None,
            severity,
            tags: vec![],
            process,
            ancestry: vec![],
            triggers,
            recommended_actions: vec![],
        }
    }

    #[test]
    fn a_connect_finding_shows_who_and_where() {
        let trigger = Trigger {
            time: Timestamp::from_unix_nanos(0),
            detail: connect("2001:db8::1"),
        };
        let line = finding_line(&finding(Severity::High, vec![trigger], vec![]), false);
        assert_eq!(
            line,
            "2023-11-14 22:13:20.123Z web-1 HIGH     script-egress: Script engine connected out \
             | python3[4242] 0000abcd-4242-777-1 | -> [2001:db8::1]:443/tcp refused (errno 111)"
        );
    }

    #[test]
    fn colour_follows_severity_and_can_be_off() {
        let plain = finding_line(&finding(Severity::Critical, vec![], vec![]), false);
        assert!(!plain.contains('\x1b'));
        let critical = finding_line(&finding(Severity::Critical, vec![], vec![]), true);
        assert!(critical.starts_with("\x1b[1;35m") && critical.ends_with(RESET));
        let low = finding_line(&finding(Severity::Low, vec![], vec![]), true);
        assert!(low.starts_with("\x1b[36m"));
    }

    #[test]
    fn long_command_lines_are_cut_and_control_characters_escaped() {
        let argv = vec![
            "sh".into(),
            "-c".into(),
            format!("\x1b[2J{}", "x".repeat(300)),
        ];
        let line = finding_line(&finding(Severity::Medium, vec![], argv), false);
        let trigger = line.rsplit(" | ").next().unwrap();
        assert!(!line.contains('\x1b'));
        assert!(trigger.starts_with("sh -c \\u{1b}[2J"));
        assert!(trigger.ends_with('…'));
        assert_eq!(trigger.chars().count(), COMMAND_LINE_CHARS + 1);
    }

    #[test]
    fn event_lines_describe_each_kind() {
        let event = |detail| Event {
            time: Timestamp::from_unix_nanos(0),
            host: "h".into(),
            process: process(vec!["curl".into(), "http://x".into()]),
            ancestry: vec![],
            detail,
        };
        let exec = event_line(&event(EventDetail::Exec(ExecEvent::default())));
        assert!(
            exec.contains(" exec ") && exec.ends_with("| curl http://x"),
            "{exec}"
        );
        let exit = event_line(&event(EventDetail::Exit(ExitEvent::from_wait_status(9))));
        assert!(exit.ends_with("| killed by signal 9"), "{exit}");
        let exit = event_line(&event(EventDetail::Exit(ExitEvent::from_wait_status(
            2 << 8,
        ))));
        assert!(exit.ends_with("| exit code 2"), "{exit}");
        let conn = event_line(&event(connect("::1")));
        assert!(
            conn.ends_with("| -> [::1]:443/tcp refused (errno 111)"),
            "{conn}"
        );
    }

    #[test]
    fn a_memory_finding_shows_the_resident_memory_sampled() {
        let trigger = Trigger {
            time: Timestamp::from_unix_nanos(0),
            detail: EventDetail::MemorySample(MemorySampleEvent {
                rss_bytes: 600 << 20,
            }),
        };
        let line = finding_line(&finding(Severity::Low, vec![trigger], vec![]), false);
        assert!(line.ends_with("| resident 600.0 MiB"), "{line}");
    }
}
