//! OCSF (Open Cybersecurity Schema Framework, schema 1.3.0) renderings for SIEMs:
//! findings as Detection Finding (class 2004), exec/fork/exit events as Process Activity
//! (class 1007) and connect events as Network Activity (class 4001).
//!
//! Times are milliseconds since the Unix epoch, as OCSF's `timestamp_t` requires; Osprey's
//! nanosecond times and ids that OCSF has no attribute for travel in `unmapped`.

use serde_json::{json, Map, Value};

use crate::{
    Ancestor, Event, EventDetail, Finding, Outcome, Process, Severity, Timestamp, TransportProtocol,
};

pub const SCHEMA_VERSION: &str = "1.3.0";

pub const DETECTION_FINDING: u32 = 2004;
pub const PROCESS_ACTIVITY: u32 = 1007;
pub const NETWORK_ACTIVITY: u32 = 4001;

/// OCSF `severity_id`: 1 Informational … 5 Critical.
pub fn severity_id(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

fn millis(t: Timestamp) -> i64 {
    t.unix_nanos().div_euclid(1_000_000)
}

/// The fields every OCSF event carries.
#[allow(clippy::too_many_arguments)]
fn base(
    class_uid: u32,
    class_name: &str,
    category_uid: u32,
    category_name: &str,
    activity_id: u32,
    activity_name: &str,
    severity: Severity,
    time: Timestamp,
    host: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("class_uid".into(), json!(class_uid));
    m.insert("class_name".into(), json!(class_name));
    m.insert("category_uid".into(), json!(category_uid));
    m.insert("category_name".into(), json!(category_name));
    m.insert("activity_id".into(), json!(activity_id));
    m.insert("activity_name".into(), json!(activity_name));
    m.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    m.insert(
        "type_name".into(),
        json!(format!("{class_name}: {activity_name}")),
    );
    m.insert("severity_id".into(), json!(severity_id(severity)));
    m.insert("severity".into(), json!(severity_name(severity)));
    m.insert("time".into(), json!(millis(time)));
    m.insert(
        "metadata".into(),
        json!({
            "version": SCHEMA_VERSION,
            "product": {
                "name": "Osprey",
                "vendor_name": "Osprey",
                "version": env!("CARGO_PKG_VERSION"),
            },
        }),
    );
    m.insert("device".into(), json!({ "hostname": host, "type_id": 0 }));
    m
}

fn file(path: &str, sha256: Option<&str>) -> Value {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let mut f = json!({ "path": path, "name": name, "type_id": 1, "type": "Regular File" });
    if let Some(hash) = sha256 {
        f["hashes"] = json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": hash }]);
    }
    f
}

fn ancestor(a: &Ancestor) -> Value {
    let mut p = json!({
        "pid": a.pid,
        "uid": a.exec_id.to_string(),
        "name": a.name,
        "cmd_line": a.argv.join(" "),
        "file": file(&a.exe, None),
    });
    if let Some(tty) = &a.tty {
        p["terminal"] = json!(tty);
    }
    p
}

/// A process with its parents nested as `parent_process` (nearest first) and its lineage.
pub fn process(p: &Process, ancestry: &[Ancestor]) -> Value {
    let mut v = json!({
        "pid": p.pid,
        "uid": p.exec_id.to_string(),
        "name": p.name,
        "cmd_line": p.command_line(),
        "file": file(&p.exe, p.sha256.as_deref()),
        "created_time": millis(p.start_time),
        "user": { "uid": p.uid.to_string(), "name": p.user },
    });
    if let Some(cwd) = &p.cwd {
        v["working_directory"] = json!(cwd);
    }
    if let Some(tty) = &p.tty {
        v["terminal"] = json!(tty);
    }
    if let Some(container) = &p.container_id {
        v["container"] = json!({ "uid": container });
    }
    if !ancestry.is_empty() {
        v["lineage"] = json!(ancestry.iter().map(|a| a.exe.as_str()).collect::<Vec<_>>());
        let mut parent = Value::Null;
        for a in ancestry.iter().rev() {
            let mut node = ancestor(a);
            if !parent.is_null() {
                node["parent_process"] = parent;
            }
            parent = node;
        }
        v["parent_process"] = parent;
    } else if p.ppid != 0 {
        v["parent_process"] = json!({ "pid": p.ppid });
    }
    v
}

/// MITRE ATT&CK tactics by the names Sigma tags use (`attack.execution`).
const TACTICS: &[(&str, &str, &str)] = &[
    ("reconnaissance", "TA0043", "Reconnaissance"),
    ("resource_development", "TA0042", "Resource Development"),
    ("initial_access", "TA0001", "Initial Access"),
    ("execution", "TA0002", "Execution"),
    ("persistence", "TA0003", "Persistence"),
    ("privilege_escalation", "TA0004", "Privilege Escalation"),
    ("defense_evasion", "TA0005", "Defense Evasion"),
    ("credential_access", "TA0006", "Credential Access"),
    ("discovery", "TA0007", "Discovery"),
    ("lateral_movement", "TA0008", "Lateral Movement"),
    ("collection", "TA0009", "Collection"),
    ("command_and_control", "TA0011", "Command and Control"),
    ("exfiltration", "TA0010", "Exfiltration"),
    ("impact", "TA0040", "Impact"),
];

/// `attacks`: one entry per technique tag (`attack.t1059.004`), each with the finding's
/// tactics; a finding with tactics only gets one entry per tactic.
fn attacks(tags: &[String]) -> Vec<Value> {
    let mut techniques = Vec::new();
    let mut tactics = Vec::new();
    for tag in tags {
        let Some(rest) = tag.strip_prefix("attack.") else {
            continue;
        };
        let is_technique = rest.len() > 1
            && rest.starts_with(['t', 'T'])
            && rest[1..].chars().all(|c| c.is_ascii_digit() || c == '.');
        if is_technique {
            techniques.push(rest.to_ascii_uppercase());
        } else if let Some((_, uid, name)) = TACTICS.iter().find(|(t, _, _)| *t == rest) {
            tactics.push(json!({ "uid": uid, "name": name }));
        }
    }
    let version = json!("v14");
    if techniques.is_empty() {
        return tactics
            .into_iter()
            .map(|t| json!({ "tactic": t, "version": version }))
            .collect();
    }
    techniques
        .into_iter()
        .map(|uid| {
            let mut a = json!({ "technique": { "uid": uid }, "version": version });
            if !tactics.is_empty() {
                a["tactics"] = json!(tactics);
                a["tactic"] = tactics[0].clone();
            }
            a
        })
        .collect()
}

fn endpoint(ip: std::net::IpAddr, port: Option<u16>) -> Value {
    let mut e = json!({ "ip": ip.to_string() });
    if let Some(port) = port {
        e["port"] = json!(port);
    }
    e
}

fn connection_info(protocol: TransportProtocol, destination: std::net::IpAddr) -> Value {
    let (name, num) = match protocol {
        TransportProtocol::Tcp => ("tcp", 6),
        TransportProtocol::Udp => ("udp", 17),
    };
    let version = if destination.is_ipv4() { 4 } else { 6 };
    json!({
        "protocol_name": name,
        "protocol_num": num,
        "protocol_ver_id": version,
        "direction_id": 2,
        "direction": "Outbound",
    })
}

/// A finding as an OCSF Detection Finding (class 2004, activity Create).
pub fn finding(f: &Finding) -> Value {
    let mut m = base(
        DETECTION_FINDING,
        "Detection Finding",
        2,
        "Findings",
        1,
        "Create",
        f.severity,
        f.time,
        &f.host,
    );
    let proc = process(&f.process, &f.ancestry);
    let mut evidence = json!({ "process": proc });
    for trigger in &f.triggers {
        if let EventDetail::Connect(c) = &trigger.detail {
            evidence["dst_endpoint"] = endpoint(c.destination_ip, Some(c.destination_port));
            evidence["connection_info"] = connection_info(c.protocol, c.destination_ip);
            break;
        }
    }
    let mut info = json!({
        "uid": f.id.to_string(),
        "title": f.title,
        "types": [f.detector.as_str()],
        "created_time": millis(f.time),
        "analytic": {
            "uid": f.rule_id,
            "name": f.title,
            "type_id": 1,
            "type": "Rule",
            "category": f.detector.as_str(),
        },
    });
    if let Some(desc) = &f.description {
        info["desc"] = json!(desc);
    }
    let attacks = attacks(&f.tags);
    if !attacks.is_empty() {
        info["attacks"] = json!(attacks);
    }
    m.insert("finding_info".into(), info);
    m.insert("message".into(), json!(f.title));
    m.insert("status_id".into(), json!(1));
    m.insert("status".into(), json!("New"));
    m.insert("is_alert".into(), json!(true));
    // `process` also at the top level: most consumers look for it there.
    m.insert("process".into(), proc);
    m.insert("evidences".into(), json!([evidence]));
    let mut unmapped = json!({
        "osprey_time": f.time.to_string(),
        "exec_id": f.process.exec_id.to_string(),
        "tags": f.tags,
        "recommended_actions": f.recommended_actions,
    });
    if let Some(author) = &f.author {
        unmapped["author"] = json!(author);
    }
    m.insert("unmapped".into(), unmapped);
    Value::Object(m)
}

/// An event as OCSF: exec/fork/exit as Process Activity (1007), connect as Network Activity
/// (4001). Memory samples (never published as events) become Process Activity "Other".
pub fn event(e: &Event) -> Value {
    let actor = e
        .ancestry
        .first()
        .map(ancestor)
        .unwrap_or_else(|| json!({ "pid": e.process.ppid }));
    let proc = process(&e.process, &e.ancestry);
    let (mut m, status_id) = match &e.detail {
        EventDetail::Connect(c) => {
            let (activity_id, activity, status) = match c.outcome {
                Outcome::Ok => (1, "Open", 1),
                Outcome::Refused | Outcome::Denied => (5, "Refuse", 2),
                Outcome::TimedOut | Outcome::Error => (4, "Fail", 2),
                Outcome::Pending => (1, "Open", 0),
            };
            let mut m = base(
                NETWORK_ACTIVITY,
                "Network Activity",
                4,
                "Network Activity",
                activity_id,
                activity,
                Severity::Info,
                e.time,
                &e.host,
            );
            m.insert(
                "dst_endpoint".into(),
                endpoint(c.destination_ip, Some(c.destination_port)),
            );
            if let Some(ip) = c.source_ip {
                m.insert("src_endpoint".into(), endpoint(ip, c.source_port));
            }
            m.insert(
                "connection_info".into(),
                connection_info(c.protocol, c.destination_ip),
            );
            m.insert("actor".into(), json!({ "process": proc }));
            let mut unmapped = json!({ "outcome": c.outcome, "hook": c.hook });
            if let Some(errno) = c.errno {
                unmapped["errno"] = json!(errno);
            }
            m.insert("unmapped".into(), unmapped);
            (m, status)
        }
        EventDetail::Close(c) => {
            let mut m = base(
                NETWORK_ACTIVITY,
                "Network Activity",
                4,
                "Network Activity",
                2,
                "Close",
                Severity::Info,
                e.time,
                &e.host,
            );
            m.insert(
                "dst_endpoint".into(),
                endpoint(c.destination_ip, Some(c.destination_port)),
            );
            m.insert("src_endpoint".into(), json!({ "port": c.source_port }));
            m.insert(
                "connection_info".into(),
                connection_info(c.protocol, c.destination_ip),
            );
            m.insert(
                "traffic".into(),
                json!({
                    "bytes_out": c.bytes_sent,
                    "bytes_in": c.bytes_received,
                    "bytes": c.bytes_sent.saturating_add(c.bytes_received),
                }),
            );
            m.insert(
                "start_time".into(),
                json!(c.established.unix_nanos() / 1_000_000),
            );
            m.insert("end_time".into(), json!(e.time.unix_nanos() / 1_000_000));
            m.insert("actor".into(), json!({ "process": proc }));
            (m, 1)
        }
        detail => {
            let (activity_id, activity) = match detail {
                EventDetail::Exec(_) | EventDetail::Fork(_) => (1, "Launch"),
                EventDetail::Exit(_) => (2, "Terminate"),
                _ => (99, "Other"),
            };
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                1,
                "System Activity",
                activity_id,
                activity,
                Severity::Info,
                e.time,
                &e.host,
            );
            m.insert("process".into(), proc);
            m.insert("actor".into(), json!({ "process": actor }));
            match detail {
                EventDetail::Exit(x) => {
                    if let Some(code) = x.exit_code {
                        m.insert("exit_code".into(), json!(code));
                    }
                    m.insert("unmapped".into(), json!({ "signal": x.signal }));
                }
                EventDetail::Exec(x) => {
                    m.insert(
                        "unmapped".into(),
                        json!({ "kind": "exec", "previous_exe": x.previous_exe }),
                    );
                }
                EventDetail::Fork(_) => {
                    m.insert("unmapped".into(), json!({ "kind": "fork" }));
                }
                EventDetail::MemorySample(s) => {
                    m.insert(
                        "unmapped".into(),
                        json!({ "kind": "memory_sample", "rss_bytes": s.rss_bytes }),
                    );
                }
                EventDetail::IntelVerdict(v) => {
                    m.insert(
                        "unmapped".into(),
                        json!({ "kind": "intel_verdict", "verdict": v }),
                    );
                }
                EventDetail::Connect(_) | EventDetail::Close(_) => {}
            }
            (m, 1)
        }
    };
    m.insert("status_id".into(), json!(status_id));
    m.insert(
        "message".into(),
        json!(format!("{} {}", e.kind().as_str(), e.process.name)),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn proc() -> Process {
        Process {
            ppid: 7,
            sha256: Some("ab".repeat(32)),
            start_time: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
            ..Process::new(
                "0000abcd-10-20-1".parse().unwrap(),
                "/usr/bin/python3.11",
                vec!["python3".into(), "-c".into(), "x".into()],
            )
        }
    }

    fn parent() -> Ancestor {
        Ancestor {
            exec_id: "0000abcd-7-5-0".parse().unwrap(),
            pid: 7,
            name: "bash".into(),
            exe: "/usr/bin/bash".into(),
            argv: vec!["bash".into()],
            tty: None,
        }
    }

    fn connect() -> ConnectEvent {
        ConnectEvent {
            family: SocketFamily::Ipv4,
            protocol: TransportProtocol::Tcp,
            destination_ip: "198.51.100.7".parse().unwrap(),
            destination_port: 443,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Refused,
            errno: Some(111),
            hook: ConnectHook::Connect,
            late_outcome: false,
        }
    }

    #[test]
    fn findings_render_as_detection_findings() {
        let p = proc();
        let f = Finding {
            id: FindingId::new("h", &p.exec_id, Detector::Heuristic, "r"),
            time: Timestamp::from_unix_nanos(1_700_000_001_000_000_000),
            host: "web-1".into(),
            detector: Detector::Heuristic,
            rule_id: "osprey.script-engine-network".into(),
            title: "Script engine connecting out".into(),
            description: None,
            author: None,
            severity: Severity::High,
            tags: vec!["attack.execution".into(), "attack.t1059.006".into()],
            process: p,
            ancestry: vec![parent()],
            triggers: vec![Trigger {
                time: Timestamp::from_unix_nanos(1),
                detail: EventDetail::Connect(connect()),
            }],
            recommended_actions: vec![ActionKind::Kill],
        };
        let v = finding(&f);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["time"], 1_700_000_001_000i64);
        assert_eq!(v["finding_info"]["uid"], f.id.0.as_str());
        assert_eq!(
            v["finding_info"]["analytic"]["uid"],
            "osprey.script-engine-network"
        );
        let attack = &v["finding_info"]["attacks"][0];
        assert_eq!(attack["technique"]["uid"], "T1059.006");
        assert_eq!(attack["tactic"]["uid"], "TA0002");
        assert_eq!(v["process"]["pid"], 10);
        assert_eq!(v["process"]["cmd_line"], "python3 -c x");
        assert_eq!(v["process"]["file"]["hashes"][0]["algorithm_id"], 3);
        assert_eq!(v["process"]["parent_process"]["pid"], 7);
        assert_eq!(v["process"]["created_time"], 1_700_000_000_123i64);
        assert_eq!(v["evidences"][0]["dst_endpoint"]["port"], 443);
        assert_eq!(v["device"]["hostname"], "web-1");
    }

    #[test]
    fn events_render_as_process_and_network_activity() {
        let connect_event = Event {
            time: Timestamp::from_unix_nanos(5_000_000),
            host: "h".into(),
            process: proc(),
            ancestry: vec![parent()],
            detail: EventDetail::Connect(connect()),
        };
        let v = event(&connect_event);
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["activity_id"], 5, "refused");
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["dst_endpoint"]["ip"], "198.51.100.7");
        assert_eq!(v["connection_info"]["protocol_num"], 6);
        assert_eq!(v["actor"]["process"]["pid"], 10);
        assert_eq!(v["time"], 5);

        let exit = Event {
            detail: EventDetail::Exit(ExitEvent::from_wait_status(9)),
            ..connect_event.clone()
        };
        let v = event(&exit);
        assert_eq!(
            (v["class_uid"].clone(), v["activity_id"].clone()),
            (json!(1007), json!(2))
        );
        assert_eq!(v["unmapped"]["signal"], 9);
        let exec = Event {
            detail: EventDetail::Exec(ExecEvent::default()),
            ..connect_event
        };
        let v = event(&exec);
        assert_eq!(v["type_uid"], 100701);
        assert_eq!(v["actor"]["process"]["pid"], 7);
        assert_eq!(v["process"]["cmd_line"], "python3 -c x");
    }
}
