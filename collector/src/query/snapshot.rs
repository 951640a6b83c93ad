//! Answers a [`Query`] from the process table and the activity kept beside it: filtered,
//! sorted, paged, with the heuristics' risk classes and each process's findings.

use std::cmp::Reverse;

use protocol::{
    query::MAX_PAGE, ConnectionState, ExecId, ProcessFilter, ProcessState, Query, QueryKind, Risk,
    Severity, Snapshot, SortKey, Timestamp,
};

use super::Activity;
use crate::{detect::heuristics::Heuristics, process::ProcessTable};

/// Page size when a query names none.
pub const DEFAULT_PAGE: u32 = 50;

/// What an answer is built from.
pub struct Sources<'a> {
    pub host: &'a str,
    pub table: &'a ProcessTable,
    pub activity: &'a Activity,
    pub heuristics: &'a Heuristics,
    /// The heuristics' settings in force (the policy's `heuristics` section).
    pub settings: &'a rules::Heuristics,
}

pub fn answer(sources: &Sources, query: &Query) -> Snapshot {
    let now = Timestamp::now();
    match &query.kind {
        QueryKind::Processes(filter) => processes(sources, filter, now),
        QueryKind::Process { exec_id } => one(sources, exec_id, now),
    }
}

fn processes(s: &Sources, filter: &ProcessFilter, now: Timestamp) -> Snapshot {
    let text = filter.text.as_deref().map(str::to_lowercase);
    let mut matching: Vec<(&protocol::Process, Risk)> = s
        .table
        .live()
        .filter(|p| filter.pid.is_none_or(|pid| p.pid == pid))
        .filter(|p| filter.user.as_deref().is_none_or(|u| user_is(p, u)))
        .filter(|p| text.as_deref().is_none_or(|t| contains_text(p, t)))
        .map(|p| (p, risk(s, p)))
        .filter(|(_, r)| filter.min_risk.is_none_or(|min| r.level >= min))
        .collect();
    let sample = |p: &protocol::Process| s.activity.get(&p.exec_id).and_then(|a| a.sample);
    match filter.sort {
        SortKey::Risk => {
            matching.sort_by_key(|(p, r)| (Reverse(r.level), Reverse(p.start_time), p.pid))
        }
        SortKey::Cpu => matching.sort_by(|(a, _), (b, _)| {
            let cpu = |p| sample(p).and_then(|x| x.cpu_percent).unwrap_or(-1.0);
            cpu(b).total_cmp(&cpu(a)).then(a.pid.cmp(&b.pid))
        }),
        SortKey::Rss => {
            matching.sort_by_key(|(p, _)| (Reverse(sample(p).map(|x| x.rss_bytes)), p.pid))
        }
        SortKey::Age => matching.sort_by_key(|(p, _)| (Reverse(p.start_time), p.pid)),
        SortKey::Pid => matching.sort_by_key(|(p, _)| p.pid),
    }
    let total = matching.len() as u32;
    let limit = match filter.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let processes = matching
        .into_iter()
        .skip(filter.offset as usize)
        .take(limit as usize)
        .map(|(p, risk)| state(s, p, risk, false, false, now))
        .collect();
    Snapshot {
        host: s.host.to_string(),
        time: now,
        total,
        processes,
        note: None,
    }
}

fn one(s: &Sources, exec_id: &ExecId, now: Timestamp) -> Snapshot {
    let (processes, note) = match s.table.remembered(exec_id) {
        Some((p, exited)) => (vec![state(s, p, risk(s, p), exited, true, now)], None),
        None => (
            Vec::new(),
            Some(format!(
                "no process {exec_id} in the table of {}: it exited a while ago, or another \
                 image runs in pid {} now",
                s.host, exec_id.pid
            )),
        ),
    };
    Snapshot {
        host: s.host.to_string(),
        time: now,
        total: processes.len() as u32,
        processes,
        note,
    }
}

fn user_is(p: &protocol::Process, user: &str) -> bool {
    p.user.as_deref() == Some(user) || user.parse::<u32>().is_ok_and(|uid| uid == p.uid)
}

/// `needle` is lowercase.
fn contains_text(p: &protocol::Process, needle: &str) -> bool {
    let has = |hay: &str| hay.to_lowercase().contains(needle);
    has(&p.exe) || p.argv.iter().any(|a| has(a)) || p.user.as_deref().is_some_and(has)
}

/// The heuristics' classes and the findings' highest severity.
fn risk(s: &Sources, p: &protocol::Process) -> Risk {
    let activity = s.activity.get(&p.exec_id);
    let mut classes = Vec::new();
    let destinations = activity
        .into_iter()
        .flat_map(|a| a.connections.iter().rev())
        .map(|c| (c.ip, c.port, c.protocol));
    let has_terminal = || p.tty.is_some() || s.table.ancestors(p).any(|a| a.tty.is_some());
    s.heuristics
        .classify(p, has_terminal, destinations, s.settings, &mut classes);
    if let Some(a) = activity {
        if let Some((severity, title)) = &a.highest {
            classes.push((
                *severity,
                format!(
                    "{} finding(s), the highest {severity}: {title}",
                    a.findings_total
                ),
            ));
        }
    }
    Risk {
        level: classes
            .iter()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(Severity::Info),
        reasons: classes.into_iter().map(|(_, r)| r).collect(),
    }
}

fn state(
    s: &Sources,
    p: &protocol::Process,
    risk: Risk,
    exited: bool,
    with_ancestry: bool,
    now: Timestamp,
) -> ProcessState {
    let activity = s.activity.get(&p.exec_id);
    let sample = activity.and_then(|a| a.sample);
    ProcessState {
        process: p.clone(),
        ancestry: if with_ancestry {
            s.table.ancestry(p)
        } else {
            Vec::new()
        },
        age_secs: secs_between(p.start_time, now),
        exited,
        cpu_percent: sample.and_then(|x| x.cpu_percent),
        rss_bytes: sample.map(|x| x.rss_bytes),
        connections: activity
            .into_iter()
            .flat_map(|a| a.connections.iter().rev())
            .map(|c| ConnectionState {
                destination_ip: c.ip,
                destination_port: c.port,
                protocol: c.protocol,
                outcome: c.outcome,
                age_secs: c.at.elapsed().as_secs(),
                open: c.is_open(),
                closed: c.closed,
            })
            .collect(),
        intel: activity.and_then(|a| a.intel.clone()),
        findings: activity
            .into_iter()
            .flat_map(|a| a.findings.iter().rev())
            .cloned()
            .collect(),
        risk,
    }
}

fn secs_between(from: Timestamp, to: Timestamp) -> u64 {
    (to.unix_nanos().saturating_sub(from.unix_nanos()) / 1_000_000_000).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::HeuristicsSection,
        source::{ExecRecord, ProcessKey},
    };
    use protocol::*;

    fn exec(pid: u32, ppid: u32, exe: &str, argv: &[&str], tty: Option<&str>) -> ExecRecord {
        ExecRecord {
            time: Timestamp::now(),
            process: ProcessKey {
                pid,
                start_ticks: u64::from(pid),
            },
            ppid: Some(ppid),
            uid: if pid == 30 { 1000 } else { 0 },
            exe: Some(exe.into()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            comm: exe.rsplit('/').next().unwrap().into(),
            tty: tty.map(String::from),
            ..Default::default()
        }
    }

    fn finding(p: &Process, severity: Severity) -> Finding {
        Finding {
            id: FindingId::new("h", &p.exec_id, Detector::Sigma, "r"),
            time: Timestamp::now(),
            host: "h".into(),
            detector: Detector::Sigma,
            rule_id: "r".into(),
            title: "Suspicious download".into(),
            description: None,
            author: None,
            severity,
            tags: vec![],
            process: p.clone(),
            ancestry: vec![],
            triggers: vec![],
            recommended_actions: vec![],
        }
    }

    /// init → sshd (tty) → bash → python (foreground); init → cron → python (background,
    /// connected out); init → cron → perl (background, with a critical finding).
    fn fixture() -> (ProcessTable, Activity, Heuristics) {
        let mut table = ProcessTable::new(BootId(1), 100);
        table.bootstrap(vec![
            exec(1, 0, "/sbin/init", &["init"], None),
            exec(10, 1, "/usr/sbin/sshd", &["sshd"], Some("pts0")),
            exec(11, 10, "/bin/bash", &["-bash"], None),
            exec(12, 11, "/usr/bin/python3.11", &["python3", "repl.py"], None),
            exec(20, 1, "/usr/sbin/cron", &["cron"], None),
            exec(
                21,
                20,
                "/usr/bin/python3.11",
                &["python3", "beacon.py"],
                None,
            ),
            exec(30, 20, "/usr/bin/perl", &["perl", "-e", "x"], None),
        ]);
        let mut activity = Activity::new(16);
        let beacon = table.get(21).unwrap().clone();
        activity.observe(&Event {
            time: Timestamp::now(),
            host: "h".into(),
            process: beacon,
            ancestry: vec![],
            detail: EventDetail::Connect(ConnectEvent {
                family: SocketFamily::Ipv4,
                protocol: TransportProtocol::Tcp,
                destination_ip: "203.0.113.7".parse().unwrap(),
                destination_port: 443,
                source_ip: None,
                source_port: None,
                outcome: Outcome::Ok,
                errno: None,
                hook: ConnectHook::Connect,
                late_outcome: false,
            }),
        });
        let perl = table.get(30).unwrap().clone();
        activity.finding(&finding(&perl, Severity::Critical));
        let heuristics = Heuristics::new(
            &HeuristicsSection::default(),
            vec!["127.0.0.0/8".parse().unwrap()],
        );
        (table, activity, heuristics)
    }

    fn ask(filter: ProcessFilter) -> Snapshot {
        let (table, activity, heuristics) = fixture();
        let settings = rules::Heuristics::default();
        let sources = Sources {
            host: "h",
            table: &table,
            activity: &activity,
            heuristics: &heuristics,
            settings: &settings,
        };
        answer(
            &sources,
            &Query {
                kind: QueryKind::Processes(filter),
            },
        )
    }

    fn pids(s: &Snapshot) -> Vec<u32> {
        s.processes.iter().map(|p| p.process.pid).collect()
    }

    #[test]
    fn risk_classes_order_the_list_and_filter_it() {
        let all = ask(ProcessFilter::default());
        assert_eq!(all.total, 7);
        assert_eq!(&pids(&all)[..2], [30, 21], "critical finding, then high");
        let beacon = &all.processes[1];
        assert_eq!(beacon.risk.level, Severity::High);
        assert!(
            beacon.risk.reasons[0].contains("203.0.113.7:443/tcp"),
            "{:?}",
            beacon.risk
        );
        assert!(
            beacon.risk.reasons[1].contains("no terminal"),
            "{:?}",
            beacon.risk
        );
        assert_eq!(beacon.connections[0].destination_port, 443);
        assert_eq!(all.processes[0].findings[0].severity, Severity::Critical);
        let repl = all.processes.iter().find(|p| p.process.pid == 12).unwrap();
        assert_eq!(repl.risk.level, Severity::Info, "a terminal up its tree");

        let medium = ask(ProcessFilter {
            min_risk: Some(Severity::Medium),
            ..Default::default()
        });
        assert_eq!(pids(&medium), [30, 21]);
        assert!(medium.processes.iter().all(|p| p.ancestry.is_empty()));
    }

    #[test]
    fn user_text_sort_and_paging() {
        assert_eq!(
            pids(&ask(ProcessFilter {
                user: Some("1000".into()),
                ..Default::default()
            })),
            [30]
        );
        let text = ask(ProcessFilter {
            text: Some("BEACON".into()),
            ..Default::default()
        });
        assert_eq!(pids(&text), [21]);
        let page = ask(ProcessFilter {
            sort: SortKey::Pid,
            offset: 2,
            limit: 3,
            ..Default::default()
        });
        assert_eq!((page.total, pids(&page)), (7, vec![11, 12, 20]));
    }

    #[test]
    fn one_process_comes_with_its_ancestry_or_a_note() {
        let (table, activity, heuristics) = fixture();
        let settings = rules::Heuristics::default();
        let sources = Sources {
            host: "h",
            table: &table,
            activity: &activity,
            heuristics: &heuristics,
            settings: &settings,
        };
        let id = table.get(12).unwrap().exec_id;
        let one = answer(
            &sources,
            &Query {
                kind: QueryKind::Process { exec_id: id },
            },
        );
        let names: Vec<_> = one.processes[0]
            .ancestry
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["bash", "sshd", "init"]);
        let gone = ExecId { seq: 5, ..id };
        let none = answer(
            &sources,
            &Query {
                kind: QueryKind::Process { exec_id: gone },
            },
        );
        assert!(none.processes.is_empty());
        assert!(none.note.unwrap().contains("no process"));
    }
}
