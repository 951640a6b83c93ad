//! Drawing `osprey top`: hosts and pending approvals on the left, the selected host's
//! processes at risk and the findings stream on the right, a status line at the bottom; the
//! detail view and the help above them. Colours only when wanted (`NO_COLOR`): without them
//! severity is still readable as text and the selection is shown reversed.

use std::{net::SocketAddr, time::Instant};

use protocol::{Decision, Severity};
use ratatui::{
    layout::{Constraint, Direction, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::state::{App, Pane};
use crate::render;

pub struct Theme {
    pub colour: bool,
}

impl Theme {
    fn severity(&self, s: Severity) -> Style {
        if !self.colour {
            return if s >= Severity::High {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
        }
        match s {
            Severity::Critical => Style::default()
                .fg(Color::Magenta)
                .add_modifier(Modifier::BOLD),
            Severity::High => Style::default().fg(Color::Red),
            Severity::Medium => Style::default().fg(Color::Yellow),
            Severity::Low => Style::default().fg(Color::Cyan),
            Severity::Info => Style::default(),
        }
    }

    fn good(&self, good: bool) -> Style {
        match (self.colour, good) {
            (false, _) => Style::default().add_modifier(Modifier::BOLD),
            (true, true) => Style::default().fg(Color::Green),
            (true, false) => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    fn dim(&self) -> Style {
        if self.colour {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }

    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn border(&self, focused: bool) -> Style {
        match (self.colour, focused) {
            (true, true) => Style::default().fg(Color::Cyan),
            (false, true) => Style::default().add_modifier(Modifier::BOLD),
            _ => Style::default(),
        }
    }
}

fn block(title: String, focused: bool, theme: &Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border(focused))
        .title(title)
}

pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(6), Constraint::Length(1)])
        .split(area);
    let columns = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(30), Constraint::Percentage(70)])
        .split(rows[0]);
    let left = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(columns[0]);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(columns[1]);
    hosts(frame, left[0], app, theme);
    approvals(frame, left[1], app, theme);
    processes(frame, right[0], app, theme);
    findings(frame, right[1], app, theme);
    status_line(frame, rows[1], app, theme);
    if app.detail.is_some() {
        detail(frame, popup(area, 90, 85), app, theme);
    }
    if app.help {
        help(frame, popup(area, 70, 80), theme);
    }
}

fn popup(area: Rect, width_pct: u16, height_pct: u16) -> Rect {
    let w = area.width * width_pct / 100;
    let h = area.height * height_pct / 100;
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn table_state(app: &App, pane: Pane) -> TableState {
    TableState::default().with_selected(Some(app.selected(pane)))
}

fn hosts(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let now = Instant::now();
    let rows: Vec<Row> = app
        .hosts
        .iter()
        .map(|(name, h)| {
            let drops: u64 = h.last.drops.values().sum();
            let seen = now.duration_since(h.seen_at).as_secs();
            let silent = h.silent(now);
            let marker = if app.host.as_ref() == Some(name) {
                "▸"
            } else {
                " "
            };
            let style = if silent {
                theme.good(false)
            } else if drops > 0 || h.last.spool_depth > 0 {
                theme.severity(Severity::Medium)
            } else {
                Style::default()
            };
            Row::new(vec![
                format!("{marker}{}", render::clean(name)),
                format!("{:.0}", h.last.events_per_sec),
                drops.to_string(),
                h.last.spool_depth.to_string(),
                if silent {
                    format!("SILENT {}", render::age(seen))
                } else {
                    render::age(seen)
                },
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["HOST", "EV/S", "DROPS", "SPOOL", "SEEN"]).style(theme.dim()))
    .block(block(
        format!(" Hosts ({}) ", app.hosts.len()),
        app.focus == Pane::Hosts,
        theme,
    ))
    .row_highlight_style(theme.selected());
    let mut state = table_state(app, Pane::Hosts);
    frame.render_stateful_widget(table, area, &mut state);
}

fn approvals(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let pending = app.approvals.pending();
    let rows: Vec<Row> = pending
        .iter()
        .map(|r| {
            // An action an AI investigation proposed is marked: the operator weighs it so.
            let action = match r.investigation_id {
                Some(_) => format!("{} (AI)", r.action),
                None => r.action.clone(),
            };
            Row::new(vec![
                action,
                render::clean(r.target.as_deref().unwrap_or("-")).into_owned(),
                render::clean(&r.host).into_owned(),
            ])
            .style(theme.severity(Severity::Medium))
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(13),
            Constraint::Min(10),
            Constraint::Length(12),
        ],
    )
    .header(Row::new(vec!["ACTION", "TARGET", "HOST"]).style(theme.dim()))
    .block(block(
        format!(
            " Pending approvals ({}) — a approve, d deny ",
            pending.len()
        ),
        app.focus == Pane::Approvals,
        theme,
    ))
    .row_highlight_style(theme.selected());
    let mut state = table_state(app, Pane::Approvals);
    frame.render_stateful_widget(table, area, &mut state);
}

fn processes(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let rows: Vec<Row> = app
        .processes
        .iter()
        .map(|p| {
            let user = p
                .process
                .user
                .clone()
                .unwrap_or_else(|| p.process.uid.to_string());
            let style = if p.exited {
                theme.dim().add_modifier(Modifier::CROSSED_OUT)
            } else {
                theme.severity(p.risk.level)
            };
            let destination = p
                .connections
                .first()
                .map(|c| SocketAddr::new(c.destination_ip, c.destination_port).to_string())
                .unwrap_or_default();
            Row::new(vec![
                p.risk.level.as_str().to_ascii_uppercase(),
                p.process.pid.to_string(),
                render::clean(&user).into_owned(),
                p.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                p.rss_bytes.map_or("-".into(), render::bytes),
                destination,
                crate::ps::command_text(p),
            ])
            .style(style)
        })
        .collect();
    let host = app.host.as_deref().unwrap_or("(waiting for a heartbeat)");
    let what = if app.all_processes {
        "Processes"
    } else {
        "Processes at risk"
    };
    let mut title = format!(
        " {what} on {} ({} of {}) ",
        render::clean(host),
        app.processes.len(),
        app.processes_total
    );
    if let Some(note) = &app.processes_note {
        title.push_str(&format!("— {} ", render::clean(note)));
    }
    let filter = app.filter(Pane::Processes);
    if !filter.is_empty() {
        title.push_str("[filtered] ");
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(21),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec![
            "RISK",
            "PID",
            "USER",
            "CPU%",
            "RSS",
            "CONNECTED TO",
            "COMMAND",
        ])
        .style(theme.dim()),
    )
    .block(block(title, app.focus == Pane::Processes, theme))
    .row_highlight_style(theme.selected());
    let mut state = table_state(app, Pane::Processes);
    frame.render_stateful_widget(table, area, &mut state);
}

fn findings(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let visible = app.visible_findings();
    let rows: Vec<Row> = visible
        .iter()
        .map(|f| {
            Row::new(vec![
                render::short_time(f.time)
                    .get(11..19)
                    .unwrap_or_default()
                    .to_string(),
                render::clean(&f.host).into_owned(),
                f.severity.as_str().to_ascii_uppercase(),
                format!("{}[{}]", render::clean(&f.process.name), f.process.pid),
                match app.verdicts.get(&f.id) {
                    Some(verdict) => format!("[AI: {verdict}] {}", render::clean(&f.title)),
                    None => render::clean(&f.title).into_owned(),
                },
            ])
            .style(theme.severity(f.severity))
        })
        .collect();
    let filter = app.filter(Pane::Findings);
    let mut title = format!(" Findings ({}) ", visible.len());
    if !filter.is_empty() {
        title.push_str("[filtered] ");
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(18),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(vec!["TIME", "HOST", "SEVERITY", "PROCESS", "TITLE"]).style(theme.dim()))
    .block(block(title, app.focus == Pane::Findings, theme))
    .row_highlight_style(theme.selected());
    let mut state = table_state(app, Pane::Findings);
    frame.render_stateful_widget(table, area, &mut state);
}

fn status_line(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = if let Some(c) = &app.confirm {
        Line::from(Span::styled(
            c.prompt.clone(),
            theme.severity(Severity::High),
        ))
    } else if let Some(i) = &app.input {
        Line::from(vec![
            Span::raw(i.prompt.clone()),
            Span::raw(i.text.clone()),
            Span::raw("▏"),
        ])
    } else if let Some(s) = app
        .status
        .as_ref()
        .filter(|s| s.at.elapsed().as_secs() < 30)
    {
        Line::from(Span::styled(
            render::clean(&s.text).into_owned(),
            theme.good(s.good),
        ))
    } else {
        let mut hint = "Tab pane  ↑↓ select  Enter details  k kill  s/r suspend/resume  b block  q quarantine  a/d approve/deny  / filter  A all  ? help  Esc quit".to_string();
        if app.skipped > 0 {
            hint = format!("{} messages skipped (console behind) — {hint}", app.skipped);
        }
        Line::from(Span::styled(hint, theme.dim()))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn detail(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    frame.render_widget(Clear, area);
    let mut lines: Vec<Line> = Vec::new();
    let title;
    match &app.detail {
        Some(Ok(p)) => {
            let proc_ = &p.process;
            title = format!(
                " {}[{}] {} on {} — Esc closes ",
                render::clean(&proc_.name),
                proc_.pid,
                proc_.exec_id,
                app.host.as_deref().unwrap_or("?")
            );
            let field = |name: &str, value: String| {
                Line::from(vec![
                    Span::styled(format!("{name:<11}"), theme.dim()),
                    Span::raw(value),
                ])
            };
            lines.push(Line::from(Span::styled(
                format!(
                    "RISK {}{}",
                    p.risk.level.as_str().to_ascii_uppercase(),
                    if p.exited { "  (exited)" } else { "" }
                ),
                theme.severity(p.risk.level),
            )));
            for reason in &p.risk.reasons {
                lines.push(Line::from(format!("  · {}", render::clean(reason))));
            }
            lines.push(field("exe", render::clean(&proc_.exe).into_owned()));
            lines.push(field(
                "argv",
                render::clean(&proc_.command_line()).into_owned()
                    + if proc_.argv_truncated {
                        " …(truncated)"
                    } else {
                        ""
                    },
            ));
            lines.push(field(
                "user",
                format!(
                    "{} (uid {}, euid {})",
                    proc_.user.as_deref().unwrap_or("?"),
                    proc_.uid,
                    proc_.euid
                ),
            ));
            lines.push(field(
                "sha256",
                proc_
                    .sha256
                    .clone()
                    .unwrap_or_else(|| "(not hashed yet)".into()),
            ));
            lines.push(field(
                "started",
                format!(
                    "{} ({} ago)",
                    render::short_time(proc_.start_time),
                    render::age(p.age_secs)
                ),
            ));
            lines.push(field(
                "resources",
                format!(
                    "CPU {}  RSS {}",
                    p.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
                    p.rss_bytes.map_or("-".into(), render::bytes)
                ),
            ));
            if let Some(cwd) = &proc_.cwd {
                lines.push(field("cwd", render::clean(cwd).into_owned()));
            }
            lines.push(field(
                "tty",
                proc_.tty.clone().unwrap_or_else(|| "none".into()),
            ));
            if let Some(c) = &proc_.container_id {
                lines.push(field("container", c.clone()));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled("Ancestry", theme.dim())));
            for (depth, a) in p.ancestry.iter().rev().enumerate() {
                lines.push(Line::from(format!(
                    "{}{}[{}] {}{}",
                    "  ".repeat(depth),
                    render::clean(&a.name),
                    a.pid,
                    render::truncate(&render::clean(&a.argv.join(" ")), 80),
                    a.tty
                        .as_deref()
                        .map(|t| format!("  (tty {t})"))
                        .unwrap_or_default()
                )));
            }
            lines.push(Line::from(Span::styled(
                format!(
                    "{}└ {}[{}] (this process)",
                    "  ".repeat(p.ancestry.len()),
                    render::clean(&proc_.name),
                    proc_.pid
                ),
                theme.severity(p.risk.level),
            )));
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!("Connections ({}, newest first)", p.connections.len()),
                theme.dim(),
            )));
            for c in &p.connections {
                let state = match (&c.closed, c.open) {
                    (Some(closed), _) => format!(
                        ", closed after {:.1} s: sent {} B, received {} B",
                        closed.duration_ms as f64 / 1000.0,
                        closed.bytes_sent,
                        closed.bytes_received
                    ),
                    (None, true) => ", open".to_string(),
                    (None, false) => String::new(),
                };
                lines.push(Line::from(format!(
                    "  {}/{} {} {} ago{state}",
                    SocketAddr::new(c.destination_ip, c.destination_port),
                    c.protocol.as_str(),
                    render::outcome_str(c.outcome),
                    render::age(c.age_secs)
                )));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!("Findings ({})", p.findings.len()),
                theme.dim(),
            )));
            for f in &p.findings {
                lines.push(Line::from(Span::styled(
                    format!(
                        "  {} {} {}: {}",
                        render::short_time(f.time),
                        f.severity.as_str().to_ascii_uppercase(),
                        render::clean(&f.rule_id),
                        render::clean(&f.title)
                    ),
                    theme.severity(f.severity),
                )));
            }
            let actions = app.actions_on(&proc_.exec_id);
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!("Actions taken ({})", actions.len()),
                theme.dim(),
            )));
            for r in actions {
                let good = matches!(r.decision, Decision::Executed | Decision::Approved);
                lines.push(Line::from(Span::styled(
                    format!("  {}", crate::audit::line(r, false)),
                    theme.good(good),
                )));
            }
        }
        Some(Err(message)) => {
            title = " Process — Esc closes ".into();
            lines.push(Line::from(render::clean(message).into_owned()));
        }
        None => return,
    }
    let widget = Paragraph::new(lines)
        .block(block(title, true, theme))
        .wrap(Wrap { trim: false });
    frame.render_widget(widget, area);
}

const HELP: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous pane"),
    ("↑ ↓ PgUp PgDn Home End", "move the selection"),
    (
        "Enter",
        "hosts: watch that host; processes, findings: details of the process",
    ),
    (
        "k",
        "kill the selected process (asks first; t kills its descendants too)",
    ),
    ("s / r", "suspend / resume the selected process"),
    (
        "b",
        "block the selected process's latest destination, with a TTL",
    ),
    ("q", "quarantine the selected process's executable"),
    ("a / d", "approve / deny the selected pending action"),
    (
        "/",
        "filter: text, host:NAME, sev:LEVEL (findings); text, pid:N, risk:LEVEL (processes)",
    ),
    ("A", "all processes / only those at risk"),
    ("?", "this help (any key closes it)"),
    ("Esc / Ctrl-C", "close the detail view, or quit"),
];

fn help(frame: &mut Frame, area: Rect, theme: &Theme) {
    frame.render_widget(Clear, area);
    let mut lines = vec![
        Line::from("Actions are signed with your operator key and checked by the host's actuator;"),
        Line::from("the host's answer shows on the bottom line, and in the trail (osprey audit)."),
        Line::from(""),
    ];
    for (keys, what) in HELP {
        lines.push(Line::from(vec![
            Span::styled(format!("{keys:<24}"), theme.severity(Severity::Low)),
            Span::raw(*what),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(" osprey top — keys ".into(), true, theme))
            .wrap(Wrap { trim: false }),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::state::Update;
    use protocol::*;
    use ratatui::{backend::TestBackend, Terminal};

    fn screen(app: &App, colour: bool, w: u16, h: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal.draw(|f| draw(f, app, &Theme { colour })).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..h {
            for x in 0..w {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn panes_show_hosts_processes_and_findings_at_any_size() {
        let mut app = App::new(None, Ok(()));
        let now = Instant::now();
        app.apply(
            Update::Heartbeat(Box::new(Heartbeat {
                host: "web-1".into(),
                events_per_sec: 5012.0,
                ..Default::default()
            })),
            now,
        );
        let p = Process::new(
            "00000001-4242-1-0".parse().unwrap(),
            "/usr/bin/python3",
            vec!["python3".into(), "-c".into(), "beacon()".into()],
        );
        app.apply(
            Update::Processes {
                host: "web-1".into(),
                result: Ok(Snapshot {
                    host: "web-1".into(),
                    time: Timestamp::now(),
                    total: 1,
                    processes: vec![ProcessState {
                        process: p,
                        ancestry: vec![],
                        age_secs: 3,
                        exited: false,
                        cpu_percent: Some(1.5),
                        rss_bytes: Some(8 << 20),
                        connections: vec![],
                        findings: vec![],
                        intel: None,
                        risk: Risk {
                            level: Severity::High,
                            reasons: vec![],
                        },
                    }],
                    note: None,
                }),
            },
            now,
        );
        let text = screen(&app, false, 160, 40);
        assert!(text.contains("web-1"), "{text}");
        assert!(text.contains("5012"), "{text}");
        assert!(
            text.contains("HIGH") && text.contains("4242") && text.contains("python3 -c beacon()"),
            "{text}"
        );
        // A tiny terminal draws without panicking.
        screen(&app, true, 20, 8);
        app.help = true;
        assert!(screen(&app, true, 100, 30).contains("kill the selected process"));
    }
}
