//! What `osprey top` knows and shows, and what each key does to it. Plain data, no terminal
//! and no network: updates come in as [`Update`]s, keys as [`Key`]s, and what must go on the
//! bus goes out as [`Request`]s (sent by the caller).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use protocol::{
    Action, AuditRecord, CommandResult, CommandStatus, Event, EventDetail, ExecId, Finding,
    FindingId, Heartbeat, Investigation, ProcessState, Severity, Snapshot, Verdict,
};

use crate::audit::Approvals;

/// Findings and audit records kept for display.
const KEEP_FINDINGS: usize = 1000;
const KEEP_AUDIT: usize = 2000;
/// A host is flagged silent after this many heartbeat intervals without one.
const SILENT_AFTER_INTERVALS: u32 = 3;
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Something that happened on the bus.
#[derive(Debug)]
pub enum Update {
    Heartbeat(Box<Heartbeat>),
    Finding(Box<Finding>),
    Audit(Box<AuditRecord>),
    /// An AI investigation's record (osprey-investigator).
    Investigation(Box<Investigation>),
    /// An event of the selected host (exec, exit, connect).
    Event(Box<Event>),
    /// The answer to the process list query of `host`.
    Processes {
        host: String,
        result: Result<Snapshot, String>,
    },
    /// The answer to a detail query.
    Detail {
        exec_id: ExecId,
        result: Result<Snapshot, String>,
    },
    /// The host's answer to an action.
    ActionDone {
        what: String,
        result: Result<CommandResult, String>,
    },
    /// An approval or denial was published (or could not be).
    ApprovalSent {
        what: String,
        result: Result<(), String>,
    },
    /// Something the operator should know (a connection problem, a skipped message).
    Notice(String),
}

/// What the bus must do for the console.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Follow this host's events and list its processes.
    Watch {
        host: String,
    },
    /// List the selected host's processes now.
    Refresh {
        host: String,
        min_risk: Option<Severity>,
        pid: Option<u32>,
        text: Option<String>,
    },
    Detail {
        host: String,
        exec_id: ExecId,
    },
    Command {
        host: String,
        action: Action,
        /// Shown with the answer ("kill python3[4242]").
        what: String,
    },
    Approval {
        pending_id: String,
        verdict: Verdict,
    },
}

/// A key, as the console understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
    BackTab,
    CtrlC,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Hosts,
    Processes,
    Findings,
    Approvals,
}

impl Pane {
    const ORDER: [Pane; 4] = [
        Pane::Hosts,
        Pane::Processes,
        Pane::Findings,
        Pane::Approvals,
    ];

    fn next(self, step: isize) -> Pane {
        let i = Pane::ORDER.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Pane::ORDER[(i + step).rem_euclid(Pane::ORDER.len() as isize) as usize]
    }
}

pub struct HostInfo {
    pub last: Heartbeat,
    pub seen_at: Instant,
    /// Between its last two heartbeats.
    pub interval: Duration,
}

impl HostInfo {
    pub fn silent(&self, now: Instant) -> bool {
        now.duration_since(self.seen_at) > self.interval * SILENT_AFTER_INTERVALS
    }
}

/// A question on the bottom line awaiting `y` (or `t` for a tree kill).
pub struct Confirm {
    pub prompt: String,
    pub request: Request,
    /// The same with `tree: true`, for a kill.
    pub tree: Option<Request>,
}

/// A line being typed.
pub struct Input {
    pub purpose: InputPurpose,
    pub prompt: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InputPurpose {
    Filter(Pane),
    /// A TTL for blocking this destination on this host.
    BlockTtl {
        host: String,
        ip: IpAddr,
        port: u16,
    },
}

/// The last action's outcome, on the status line.
pub struct Status {
    pub text: String,
    pub good: bool,
    pub at: Instant,
}

/// Filters typed with `/`: `host:NAME`, `sev:LEVEL` (that level or above), `pid:N` and
/// free text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub host: Option<String>,
    pub min_severity: Option<Severity>,
    pub pid: Option<u32>,
    pub text: Option<String>,
}

impl Filter {
    pub fn parse(input: &str) -> Filter {
        let mut f = Filter::default();
        let mut words = Vec::new();
        for word in input.split_whitespace() {
            if let Some(h) = word.strip_prefix("host:") {
                f.host = Some(h.to_string());
            } else if let Some(pid) = word.strip_prefix("pid:").and_then(|p| p.parse().ok()) {
                f.pid = Some(pid);
            } else if let Some(s) = word
                .strip_prefix("sev:")
                .or_else(|| word.strip_prefix("risk:"))
                .and_then(|s| s.parse().ok())
            {
                f.min_severity = Some(s);
            } else {
                words.push(word);
            }
        }
        if !words.is_empty() {
            f.text = Some(words.join(" ").to_lowercase());
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn matches_finding(&self, f: &Finding) -> bool {
        self.host.as_deref().is_none_or(|h| f.host.contains(h))
            && self.pid.is_none_or(|pid| f.process.pid == pid)
            && self.min_severity.is_none_or(|s| f.severity >= s)
            && self.text.as_deref().is_none_or(|t| {
                [&f.title, &f.rule_id, &f.host, &f.process.exe]
                    .iter()
                    .any(|x| x.to_lowercase().contains(t))
                    || f.process.command_line().to_lowercase().contains(t)
            })
    }
}

pub struct App {
    pub hosts: BTreeMap<String, HostInfo>,
    /// The host whose processes are shown.
    pub host: Option<String>,
    /// Host named on the command line: selected as soon as it is heard of.
    pub wanted_host: Option<String>,
    pub processes: Vec<ProcessState>,
    pub processes_total: u32,
    pub processes_note: Option<String>,
    pub processes_at: Option<Instant>,
    /// The list is out of date (an event or a finding about the host came in).
    pub stale: bool,
    pub findings: VecDeque<Finding>,
    /// AI verdicts by finding (`malicious (90%)`), the last [`KEEP_FINDINGS`], oldest first.
    pub verdicts: HashMap<FindingId, String>,
    verdicts_order: VecDeque<FindingId>,
    pub audit: VecDeque<AuditRecord>,
    pub approvals: Approvals,
    pub detail: Option<Result<ProcessState, String>>,
    pub focus: Pane,
    /// Selected row per pane.
    pub selected: BTreeMap<&'static str, usize>,
    pub filters: BTreeMap<&'static str, Filter>,
    pub confirm: Option<Confirm>,
    pub input: Option<Input>,
    pub help: bool,
    pub status: Option<Status>,
    /// Show every process, not only those at risk.
    pub all_processes: bool,
    pub quit: bool,
    /// Whether an operator key is loaded (actions need one).
    pub can_act: Result<(), String>,
    /// Messages skipped because the console could not keep up.
    pub skipped: u64,
}

fn pane_key(p: Pane) -> &'static str {
    match p {
        Pane::Hosts => "hosts",
        Pane::Processes => "processes",
        Pane::Findings => "findings",
        Pane::Approvals => "approvals",
    }
}

impl App {
    pub fn new(host: Option<String>, can_act: Result<(), String>) -> App {
        App {
            hosts: BTreeMap::new(),
            host: None,
            wanted_host: host,
            processes: Vec::new(),
            processes_total: 0,
            processes_note: None,
            processes_at: None,
            stale: false,
            findings: VecDeque::new(),
            verdicts: HashMap::new(),
            verdicts_order: VecDeque::new(),
            audit: VecDeque::new(),
            approvals: Approvals::default(),
            detail: None,
            focus: Pane::Processes,
            selected: BTreeMap::new(),
            filters: BTreeMap::new(),
            confirm: None,
            input: None,
            help: false,
            status: None,
            all_processes: false,
            quit: false,
            can_act,
            skipped: 0,
        }
    }

    pub fn selected(&self, pane: Pane) -> usize {
        self.selected.get(pane_key(pane)).copied().unwrap_or(0)
    }

    pub fn filter(&self, pane: Pane) -> Filter {
        self.filters
            .get(pane_key(pane))
            .cloned()
            .unwrap_or_default()
    }

    /// The findings the findings filter lets through, newest first.
    pub fn visible_findings(&self) -> Vec<&Finding> {
        let filter = self.filter(Pane::Findings);
        self.findings
            .iter()
            .rev()
            .filter(|f| filter.matches_finding(f))
            .collect()
    }

    pub fn host_names(&self) -> Vec<&String> {
        self.hosts.keys().collect()
    }

    /// The process list query for the selected host.
    pub fn refresh_request(&self) -> Option<Request> {
        let filter = self.filter(Pane::Processes);
        // A process asked for by pid is listed whatever its risk.
        let at_risk = !self.all_processes && filter.pid.is_none();
        Some(Request::Refresh {
            host: self.host.clone()?,
            min_risk: filter.min_severity.or(at_risk.then_some(Severity::Low)),
            pid: filter.pid,
            text: filter.text,
        })
    }

    /// Applies an update; returns requests it calls for (a host to watch once one is heard of).
    pub fn apply(&mut self, update: Update, now: Instant) -> Vec<Request> {
        let mut out = Vec::new();
        match update {
            Update::Heartbeat(hb) => {
                let name = hb.host.clone();
                let interval = self
                    .hosts
                    .get(&name)
                    .map(|h| now.duration_since(h.seen_at))
                    .filter(|d| *d > Duration::from_millis(200))
                    .unwrap_or(DEFAULT_HEARTBEAT);
                self.hosts.insert(
                    name.clone(),
                    HostInfo {
                        last: *hb,
                        seen_at: now,
                        interval,
                    },
                );
                let wanted = self.wanted_host.as_deref().is_none_or(|w| {
                    protocol::subject::host_token(w) == protocol::subject::host_token(&name)
                });
                if self.host.is_none() && wanted {
                    out.extend(self.select_host(name));
                }
            }
            Update::Finding(f) => {
                if Some(&f.host) == self.host.as_ref() {
                    self.stale = true;
                }
                if self.findings.len() >= KEEP_FINDINGS {
                    self.findings.pop_front();
                }
                self.findings.push_back(*f);
            }
            Update::Investigation(record) => {
                let verdict = crate::investigations::verdict(&record);
                if self
                    .verdicts
                    .insert(record.finding_id.clone(), verdict)
                    .is_none()
                {
                    self.verdicts_order.push_back(record.finding_id);
                }
                while self.verdicts_order.len() > KEEP_FINDINGS {
                    if let Some(old) = self.verdicts_order.pop_front() {
                        self.verdicts.remove(&old);
                    }
                }
            }
            Update::Audit(r) => {
                self.approvals.observe(&r);
                if self.audit.len() >= KEEP_AUDIT {
                    self.audit.pop_front();
                }
                self.audit.push_back(*r);
            }
            Update::Event(e) => {
                if Some(&e.host) != self.host.as_ref() {
                    return out;
                }
                match &e.detail {
                    EventDetail::Exit(_) => {
                        if let Some(p) = self
                            .processes
                            .iter_mut()
                            .find(|p| p.process.exec_id == e.process.exec_id)
                        {
                            p.exited = true;
                        }
                    }
                    EventDetail::Exec(_) | EventDetail::Connect(_) => self.stale = true,
                    _ => {}
                }
            }
            Update::Processes { host, result } => {
                if Some(&host) != self.host.as_ref() {
                    return out;
                }
                self.processes_at = Some(now);
                match result {
                    Ok(s) => {
                        self.processes = s.processes;
                        self.processes_total = s.total;
                        self.processes_note = s.note;
                    }
                    Err(e) => self.processes_note = Some(e),
                }
                let len = self.processes.len();
                self.clamp(Pane::Processes, len);
            }
            Update::Detail { exec_id, result } => {
                let shown = match &self.detail {
                    Some(Ok(p)) => p.process.exec_id == exec_id,
                    Some(Err(_)) | None => true,
                };
                if shown {
                    self.detail = Some(result.and_then(|s| {
                        s.processes
                            .into_iter()
                            .next()
                            .ok_or_else(|| s.note.unwrap_or_else(|| "no such process".into()))
                    }));
                }
            }
            Update::ActionDone { what, result } => {
                let (text, good) = match result {
                    Ok(r) => (
                        format!("{what}: {}", crate::commands::result_line(&r)),
                        r.status == CommandStatus::Ok,
                    ),
                    Err(e) => (format!("{what}: {e}"), false),
                };
                self.status = Some(Status {
                    text,
                    good,
                    at: now,
                });
                self.stale = true;
            }
            Update::ApprovalSent { what, result } => {
                self.status = Some(match result {
                    Ok(()) => Status {
                        text: format!("{what}: sent to the responder"),
                        good: true,
                        at: now,
                    },
                    Err(e) => Status {
                        text: format!("{what}: {e}"),
                        good: false,
                        at: now,
                    },
                });
            }
            Update::Notice(text) => {
                self.status = Some(Status {
                    text,
                    good: false,
                    at: now,
                })
            }
        }
        out
    }

    fn select_host(&mut self, host: String) -> Vec<Request> {
        if self.host.as_ref() == Some(&host) {
            return Vec::new();
        }
        self.host = Some(host.clone());
        self.processes.clear();
        self.processes_total = 0;
        self.processes_note = Some("asking the host…".into());
        self.selected.insert(pane_key(Pane::Processes), 0);
        let mut out = vec![Request::Watch { host }];
        out.extend(self.refresh_request());
        out
    }

    fn pane_len(&self, pane: Pane) -> usize {
        match pane {
            Pane::Hosts => self.hosts.len(),
            Pane::Processes => self.processes.len(),
            Pane::Findings => self.visible_findings().len(),
            Pane::Approvals => self.approvals.pending().len(),
        }
    }

    fn clamp(&mut self, pane: Pane, len: usize) {
        let sel = self.selected(pane).min(len.saturating_sub(1));
        self.selected.insert(pane_key(pane), sel);
    }

    fn move_selection(&mut self, delta: isize) {
        let len = self.pane_len(self.focus);
        let sel =
            (self.selected(self.focus) as isize + delta).clamp(0, len.saturating_sub(1) as isize);
        self.selected.insert(pane_key(self.focus), sel as usize);
    }

    /// The process the keys act on: the open detail, the selected process, or the process of
    /// the selected finding.
    fn target(&self) -> Option<(String, TargetProcess)> {
        if let Some(Ok(p)) = &self.detail {
            return Some((self.host.clone()?, TargetProcess::of_state(p)));
        }
        match self.focus {
            Pane::Findings => {
                let f = self
                    .visible_findings()
                    .get(self.selected(Pane::Findings))
                    .copied()?;
                Some((f.host.clone(), TargetProcess::of_finding(f)))
            }
            _ => {
                let p = self.processes.get(self.selected(Pane::Processes))?;
                Some((self.host.clone()?, TargetProcess::of_state(p)))
            }
        }
    }

    fn ask(&mut self, prompt: String, request: Request, tree: Option<Request>) {
        self.confirm = Some(Confirm {
            prompt,
            request,
            tree,
        });
    }

    fn refuse_locally(&mut self, text: String, now: Instant) {
        self.status = Some(Status {
            text,
            good: false,
            at: now,
        });
    }

    /// Handles a key; returns what must go on the bus.
    pub fn key(&mut self, key: Key, now: Instant) -> Vec<Request> {
        if key == Key::CtrlC {
            self.quit = true;
            return Vec::new();
        }
        if let Some(confirm) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => vec![confirm.request],
                Key::Char('t') if confirm.tree.is_some() => confirm.tree.into_iter().collect(),
                _ => {
                    self.refuse_locally("cancelled".into(), now);
                    Vec::new()
                }
            };
        }
        if self.input.is_some() {
            return self.input_key(key, now);
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        match key {
            Key::Esc if self.detail.is_some() => self.detail = None,
            Key::Esc => self.quit = true,
            Key::Char('?') => self.help = true,
            Key::Tab => self.focus = self.focus.next(1),
            Key::BackTab => self.focus = self.focus.next(-1),
            Key::Up => self.move_selection(-1),
            Key::Down => self.move_selection(1),
            Key::PageUp => self.move_selection(-10),
            Key::PageDown => self.move_selection(10),
            Key::Home => self.move_selection(isize::MIN / 2),
            Key::End => self.move_selection(isize::MAX / 2),
            Key::Char('/') => {
                let pane = if self.focus == Pane::Hosts || self.focus == Pane::Approvals {
                    Pane::Findings
                } else {
                    self.focus
                };
                let current = self
                    .filters
                    .get(pane_key(pane))
                    .map(describe)
                    .unwrap_or_default();
                self.input = Some(Input {
                    purpose: InputPurpose::Filter(pane),
                    prompt: match pane {
                        Pane::Processes => "filter processes (text, pid:N, risk:LEVEL): ".into(),
                        _ => "filter findings (text, host:NAME, sev:LEVEL): ".into(),
                    },
                    text: current,
                });
            }
            Key::Char('A') => {
                self.all_processes = !self.all_processes;
                return self.refresh_request().into_iter().collect();
            }
            Key::Enter => return self.enter(),
            Key::Char(c @ ('k' | 's' | 'r' | 'q' | 'b')) => return self.act(c, now),
            Key::Char(c @ ('a' | 'd')) => self.approve(c == 'a', now),
            _ => {}
        }
        Vec::new()
    }

    fn enter(&mut self) -> Vec<Request> {
        match self.focus {
            Pane::Hosts => {
                let Some(host) = self
                    .host_names()
                    .get(self.selected(Pane::Hosts))
                    .map(|h| h.to_string())
                else {
                    return Vec::new();
                };
                self.focus = Pane::Processes;
                self.select_host(host)
            }
            Pane::Approvals => Vec::new(),
            _ => match self.target() {
                Some((host, t)) => {
                    self.detail = Some(Err(format!("asking {host} about {}…", t.exec_id)));
                    vec![Request::Detail {
                        host,
                        exec_id: t.exec_id,
                    }]
                }
                None => Vec::new(),
            },
        }
    }

    fn act(&mut self, c: char, now: Instant) -> Vec<Request> {
        if let Err(why) = &self.can_act {
            let why = why.clone();
            self.refuse_locally(format!("cannot act: {why}"), now);
            return Vec::new();
        }
        let Some((host, t)) = self.target() else {
            self.refuse_locally("select a process first".into(), now);
            return Vec::new();
        };
        let label = t.label();
        let command = |action: Action, verb: &str| Request::Command {
            host: host.clone(),
            action,
            what: format!("{verb} {label}"),
        };
        match c {
            'k' => self.ask(
                format!("Kill {label} on {host}? y: kill it, t: kill it and its descendants, any other key: no"),
                command(Action::Kill { target: t.exec_id, tree: false }, "kill"),
                Some(command(Action::Kill { target: t.exec_id, tree: true }, "tree kill")),
            ),
            's' => self.ask(
                format!("Suspend {label} on {host}? y/n"),
                command(Action::Suspend { target: t.exec_id, ttl_secs: None }, "suspend"),
                None,
            ),
            'r' => return vec![command(Action::Resume { target: t.exec_id }, "resume")],
            'q' => self.ask(
                format!("Quarantine the executable of {label} ({}) on {host}? y/n", t.exe),
                command(
                    Action::Quarantine { target: Some(t.exec_id), path: None },
                    "quarantine",
                ),
                None,
            ),
            'b' => match t.destination {
                Some((ip, port)) => {
                    self.input = Some(Input {
                        purpose: InputPurpose::BlockTtl { host, ip, port },
                        prompt: format!(
                            "Block {} on {} for (TTL, e.g. 10m; empty: until unblocked): ",
                            SocketAddr::new(ip, port),
                            self.host.as_deref().unwrap_or("?")
                        ),
                        text: "10m".into(),
                    });
                }
                None => self.refuse_locally(format!("{label} has no connection to block"), now),
            },
            _ => {}
        }
        Vec::new()
    }

    fn approve(&mut self, approve: bool, now: Instant) {
        if let Err(why) = &self.can_act {
            let why = why.clone();
            self.refuse_locally(format!("cannot answer: {why}"), now);
            return;
        }
        let pending = self.approvals.pending();
        let Some(r) = pending.get(self.selected(Pane::Approvals)).copied() else {
            self.refuse_locally("no action awaits approval".into(), now);
            return;
        };
        let Some(id) = r.pending_id.clone() else {
            return;
        };
        let what = format!(
            "{} {} on {}",
            r.action,
            r.target.as_deref().unwrap_or("-"),
            r.host
        );
        let verdict = if approve {
            Verdict::Approve
        } else {
            Verdict::Deny
        };
        self.ask(
            format!(
                "{} {what} (pending {id})? y/n",
                if approve { "Approve" } else { "Deny" }
            ),
            Request::Approval {
                pending_id: id,
                verdict,
            },
            None,
        );
    }

    fn input_key(&mut self, key: Key, now: Instant) -> Vec<Request> {
        let Some(input) = self.input.as_mut() else {
            return Vec::new();
        };
        match key {
            Key::Char(c) => input.text.push(c),
            Key::Backspace => {
                input.text.pop();
            }
            Key::Esc => self.input = None,
            Key::Enter => {
                let Some(input) = self.input.take() else {
                    return Vec::new();
                };
                match input.purpose {
                    InputPurpose::Filter(pane) => {
                        self.filters
                            .insert(pane_key(pane), Filter::parse(&input.text));
                        self.selected.insert(pane_key(pane), 0);
                        if pane == Pane::Processes {
                            return self.refresh_request().into_iter().collect();
                        }
                    }
                    InputPurpose::BlockTtl { host, ip, port } => {
                        let text = input.text.trim();
                        let ttl = if text.is_empty() {
                            None
                        } else {
                            match humantime::parse_duration(text) {
                                Ok(d) => Some(d.as_secs().max(1)),
                                Err(e) => {
                                    self.refuse_locally(format!("TTL {text:?}: {e}"), now);
                                    return Vec::new();
                                }
                            }
                        };
                        let destination = SocketAddr::new(ip, port);
                        return vec![Request::Command {
                            host,
                            action: Action::Block {
                                cidr: ipnet::IpNet::from(ip).to_string(),
                                port: Some(port),
                                ttl_secs: ttl,
                            },
                            what: format!("block {destination}"),
                        }];
                    }
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Audit records about `exec_id`, newest first.
    pub fn actions_on(&self, exec_id: &ExecId) -> Vec<&AuditRecord> {
        let id = exec_id.to_string();
        self.audit
            .iter()
            .rev()
            .filter(|r| r.target.as_deref() == Some(id.as_str()))
            .collect()
    }
}

/// The filter as it would be typed again.
fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &f.host {
        parts.push(format!("host:{h}"));
    }
    if let Some(s) = f.min_severity {
        parts.push(format!("sev:{s}"));
    }
    if let Some(pid) = f.pid {
        parts.push(format!("pid:{pid}"));
    }
    if let Some(t) = &f.text {
        parts.push(t.clone());
    }
    parts.join(" ")
}

/// What an action needs to know about its process.
struct TargetProcess {
    exec_id: ExecId,
    name: String,
    exe: String,
    /// The most recent destination it connected to.
    destination: Option<(IpAddr, u16)>,
}

impl TargetProcess {
    fn of_state(p: &ProcessState) -> TargetProcess {
        TargetProcess {
            exec_id: p.process.exec_id,
            name: p.process.name.clone(),
            exe: p.process.exe.clone(),
            destination: p
                .connections
                .first()
                .map(|c| (c.destination_ip, c.destination_port)),
        }
    }

    fn of_finding(f: &Finding) -> TargetProcess {
        TargetProcess {
            exec_id: f.process.exec_id,
            name: f.process.name.clone(),
            exe: f.process.exe.clone(),
            destination: f.triggers.iter().find_map(|t| match &t.detail {
                EventDetail::Connect(c) => Some((c.destination_ip, c.destination_port)),
                _ => None,
            }),
        }
    }

    /// `python3[4242]`
    fn label(&self) -> String {
        format!("{}[{}]", crate::render::clean(&self.name), self.exec_id.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;

    fn heartbeat(host: &str) -> Update {
        Update::Heartbeat(Box::new(Heartbeat {
            host: host.into(),
            ..Default::default()
        }))
    }

    fn state(pid: u32, risk: Severity) -> ProcessState {
        ProcessState {
            process: Process::new(
                format!("00000001-{pid}-1-0").parse().unwrap(),
                "/usr/bin/python3",
                vec!["python3".into()],
            ),
            ancestry: vec![],
            age_secs: 1,
            exited: false,
            cpu_percent: None,
            rss_bytes: None,
            connections: vec![ConnectionState {
                destination_ip: "127.0.0.2".parse().unwrap(),
                destination_port: 8080,
                protocol: TransportProtocol::Tcp,
                outcome: Outcome::Ok,
                age_secs: 1,
                open: false,
                closed: None,
            }],
            findings: vec![],
            intel: None,
            risk: Risk {
                level: risk,
                reasons: vec![],
            },
        }
    }

    fn listed(app: &mut App, states: Vec<ProcessState>) {
        let now = Instant::now();
        app.apply(
            Update::Processes {
                host: "h".into(),
                result: Ok(Snapshot {
                    host: "h".into(),
                    time: Timestamp::now(),
                    total: states.len() as u32,
                    processes: states,
                    note: None,
                }),
            },
            now,
        );
    }

    #[test]
    fn the_first_host_heard_of_is_watched_and_listed() {
        let mut app = App::new(None, Ok(()));
        let out = app.apply(heartbeat("h"), Instant::now());
        assert_eq!(out[0], Request::Watch { host: "h".into() });
        assert!(matches!(
            &out[1],
            Request::Refresh {
                min_risk: Some(Severity::Low),
                ..
            }
        ));
        assert!(app.apply(heartbeat("other"), Instant::now()).is_empty());
        let mut wanted = App::new(Some("other".into()), Ok(()));
        assert!(wanted.apply(heartbeat("h"), Instant::now()).is_empty());
        assert_eq!(wanted.apply(heartbeat("other"), Instant::now()).len(), 2);
    }

    #[test]
    fn kill_asks_first_and_names_the_process() {
        let mut app = App::new(None, Ok(()));
        let now = Instant::now();
        app.apply(heartbeat("h"), now);
        listed(
            &mut app,
            vec![state(10, Severity::High), state(11, Severity::Medium)],
        );
        app.key(Key::Down, now);
        assert!(app.key(Key::Char('k'), now).is_empty());
        let prompt = &app.confirm.as_ref().unwrap().prompt;
        assert!(
            prompt.contains("python3[11]") && prompt.contains("on h"),
            "{prompt}"
        );
        let sent = app.key(Key::Char('y'), now);
        assert!(
            matches!(&sent[..], [Request::Command { action: Action::Kill { target, tree: false }, .. }] if target.pid == 11)
        );
        // Anything but y cancels.
        app.key(Key::Char('k'), now);
        assert!(app.key(Key::Char('n'), now).is_empty());
        assert!(app.confirm.is_none());
        // A tree kill.
        app.key(Key::Char('k'), now);
        let sent = app.key(Key::Char('t'), now);
        assert!(matches!(
            &sent[..],
            [Request::Command {
                action: Action::Kill { tree: true, .. },
                ..
            }]
        ));
    }

    #[test]
    fn block_takes_a_ttl_and_results_reach_the_status_line() {
        let mut app = App::new(None, Ok(()));
        let now = Instant::now();
        app.apply(heartbeat("h"), now);
        listed(&mut app, vec![state(10, Severity::High)]);
        app.key(Key::Char('b'), now);
        for _ in 0..3 {
            app.key(Key::Backspace, now);
        }
        app.key(Key::Char('5'), now);
        app.key(Key::Char('s'), now);
        let sent = app.key(Key::Enter, now);
        assert!(
            matches!(&sent[..], [Request::Command { action: Action::Block { cidr, port: Some(8080), ttl_secs: Some(5) }, .. }] if cidr == "127.0.0.2/32"),
            "{sent:?}"
        );
        app.apply(
            Update::ActionDone {
                what: "kill python3[1]".into(),
                result: Ok(CommandResult {
                    command_id: "c".into(),
                    host: "h".into(),
                    status: CommandStatus::Refused,
                    reason: "pid 1 is protected".into(),
                    output: None,
                    time: Timestamp::now(),
                }),
            },
            now,
        );
        let status = app.status.as_ref().unwrap();
        assert!(
            !status.good && status.text.contains("refused by h: pid 1 is protected"),
            "{}",
            status.text
        );
    }

    #[test]
    fn without_a_key_nothing_is_sent_and_the_reason_shows() {
        let mut app = App::new(None, Err("no operator key".into()));
        let now = Instant::now();
        app.apply(heartbeat("h"), now);
        listed(&mut app, vec![state(10, Severity::High)]);
        assert!(app.key(Key::Char('k'), now).is_empty());
        assert!(app.confirm.is_none());
        assert!(app
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("no operator key"));
    }

    #[test]
    fn filters_parse_host_severity_and_text() {
        let f = Filter::parse("host:web sev:high Curl pid:7");
        assert_eq!(f.host.as_deref(), Some("web"));
        assert_eq!(f.pid, Some(7));
        assert_eq!(f.min_severity, Some(Severity::High));
        assert_eq!(f.text.as_deref(), Some("curl"));
        assert_eq!(describe(&f), "host:web sev:high pid:7 curl");
        assert!(Filter::parse("  ").is_empty());
    }

    #[test]
    fn ai_verdicts_are_kept_by_finding_and_bounded() {
        let mut app = App::new(None, Ok(()));
        let now = Instant::now();
        let record = |id: String, verdict: Option<Assessment>| Investigation {
            id: "i".into(),
            finding_id: FindingId(id),
            host: "h".into(),
            rule_id: "r".into(),
            started: Timestamp::now(),
            finished: Timestamp::now(),
            model: "m".into(),
            summary: String::new(),
            verdict,
            confidence: verdict.map(|_| 0.9),
            steps: vec![],
            proposals: vec![],
            outcome: match verdict {
                Some(_) => InvestigationOutcome::Concluded,
                None => InvestigationOutcome::LlmUnavailable {
                    reason: "down".into(),
                },
            },
            tokens: 0,
        };
        let update = |r| Update::Investigation(Box::new(r));
        app.apply(
            update(record("f1".into(), Some(Assessment::Malicious))),
            now,
        );
        app.apply(update(record("f2".into(), None)), now);
        assert_eq!(app.verdicts[&FindingId("f1".into())], "malicious (90%)");
        assert_eq!(app.verdicts[&FindingId("f2".into())], "llm_unavailable");
        for i in 0..KEEP_FINDINGS {
            app.apply(update(record(format!("x{i}"), None)), now);
        }
        assert_eq!(app.verdicts.len(), KEEP_FINDINGS);
        assert!(!app.verdicts.contains_key(&FindingId("f1".into())));
    }

    #[test]
    fn escape_closes_layers_before_it_quits() {
        let mut app = App::new(None, Ok(()));
        let now = Instant::now();
        app.key(Key::Char('?'), now);
        app.key(Key::Esc, now);
        assert!(!app.quit && !app.help);
        app.detail = Some(Err("x".into()));
        app.key(Key::Esc, now);
        assert!(!app.quit && app.detail.is_none());
        app.key(Key::Esc, now);
        assert!(app.quit);
    }
}
