//! The built-in heuristics our users' process monitor had: a script engine talking to the
//! internet is high risk; one running in the background, with no terminal anywhere in its
//! ancestry, is medium. Safe paths and ignored executables are exempt. The policy file can
//! switch each one off and set its severity and recommended actions (`rules::Heuristics`).

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use protocol::{Detector, Event, EventDetail, Process, Severity, TransportProtocol};
use rules::Heuristics as Settings;

use super::{engines::ScriptEngines, Detection};
use crate::config::HeuristicsSection;

pub const SCRIPT_ENGINE_NETWORK: &str = "osprey.script-engine-network";
pub const SCRIPT_ENGINE_BACKGROUND: &str = "osprey.script-engine-background";

pub struct Heuristics {
    enabled: bool,
    safe_paths: Vec<PathBuf>,
    ignored: Vec<PathBuf>,
    local: Vec<IpNet>,
    engines: ScriptEngines,
}

impl Heuristics {
    pub fn new(section: &HeuristicsSection, local: Vec<IpNet>) -> Self {
        Heuristics {
            enabled: section.enabled,
            safe_paths: section.safe_paths.clone(),
            ignored: section.ignored_executables.clone(),
            local,
            engines: ScriptEngines::new(&section.script_engines),
        }
    }

    /// The script engine a process runs, by executable name (resolved or as invoked, so
    /// `python3` → `python3.11` and a `sh` symlink to dash both count).
    pub fn engine_of<'a>(&self, p: &'a Process) -> Option<&'a str> {
        let invoked = p
            .invoked_path
            .as_deref()
            .map(|i| i.rsplit('/').next().unwrap_or(i));
        [Some(p.name.as_str()), invoked]
            .into_iter()
            .flatten()
            .find(|name| self.engines.matches(name))
    }

    /// Safe paths and ignored executables.
    pub fn exempt(&self, p: &Process) -> bool {
        let exe = std::path::Path::new(&p.exe);
        self.ignored.iter().any(|i| i == exe) || self.safe_paths.iter().any(|s| exe.starts_with(s))
    }

    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local.iter().any(|net| net.contains(&ip))
    }

    /// The heuristics' risk classes for a live process, as host state queries show them: its
    /// script engine connected to a non-local destination (the first of `destinations`
    /// that is), or runs with no terminal anywhere in its ancestry (`has_terminal`, asked
    /// only of script engines: it walks the ancestry). Each class with the severity
    /// `settings` give it, and one short reason.
    pub fn classify(
        &self,
        p: &Process,
        has_terminal: impl FnOnce() -> bool,
        mut destinations: impl Iterator<Item = (IpAddr, u16, TransportProtocol)>,
        settings: &Settings,
        out: &mut Vec<(Severity, String)>,
    ) {
        let network = &settings.script_engine_network;
        let background = &settings.script_engine_background;
        if !self.enabled || self.exempt(p) {
            return;
        }
        let Some(engine) = self.engine_of(p) else {
            return;
        };
        if network.enabled {
            if let Some((ip, port, protocol)) = destinations.find(|(ip, ..)| !self.is_local(*ip)) {
                out.push((
                    network.severity,
                    format!(
                        "script engine {engine} connected to {}/{}",
                        std::net::SocketAddr::new(ip, port),
                        protocol.as_str()
                    ),
                ));
            }
        }
        if background.enabled && !has_terminal() {
            out.push((
                background.severity,
                format!("script engine {engine} running with no terminal in its ancestry"),
            ));
        }
    }

    /// Appends what the heuristics conclude about `event`, with the severities and actions
    /// `settings` (the policy's `heuristics` section, or its defaults) give them.
    pub fn evaluate(&self, event: &Event, settings: &Settings, out: &mut Vec<Detection>) {
        let network = &settings.script_engine_network;
        let background = &settings.script_engine_background;
        if !self.enabled || !(network.enabled || background.enabled) || self.exempt(&event.process)
        {
            return;
        }
        let Some(engine) = self.engine_of(&event.process) else {
            return;
        };
        match &event.detail {
            EventDetail::Connect(c) if network.enabled && !self.is_local(c.destination_ip) => out
                .push(Detection {
                    detector: Detector::Heuristic,
                    rule_id: SCRIPT_ENGINE_NETWORK.into(),
                    title: format!(
                        "Script engine {engine} connected to {}:{}/{}",
                        c.destination_ip,
                        c.destination_port,
                        c.protocol.as_str()
                    ),
                    description: Some(
                        "A script interpreter opened a connection to a non-local destination: \
                     typical of download cradles, reverse shells and C2 beacons."
                            .into(),
                    ),
                    author: None,
                    severity: network.severity,
                    tags: vec![
                        "attack.execution".into(),
                        "attack.t1059".into(),
                        "attack.command_and_control".into(),
                    ],
                    actions: network.actions.clone(),
                }),
            EventDetail::Exec(_) if background.enabled && !has_terminal(event) => {
                out.push(Detection {
                    detector: Detector::Heuristic,
                    rule_id: SCRIPT_ENGINE_BACKGROUND.into(),
                    title: format!("Script engine {engine} running in the background"),
                    description: Some(
                        "A script interpreter started with no terminal anywhere in its ancestry \
                     (not started by a person at a shell)."
                            .into(),
                    ),
                    author: None,
                    severity: background.severity,
                    tags: vec!["attack.execution".into(), "attack.t1059".into()],
                    actions: background.actions.clone(),
                })
            }
            _ => {}
        }
    }
}

fn has_terminal(event: &Event) -> bool {
    event.process.tty.is_some() || event.ancestry.iter().any(|a| a.tty.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;

    fn event(name: &str, tty: Option<&str>, detail: EventDetail) -> Event {
        Event {
            time: Timestamp::default(),
            host: "h".into(),
            process: Process {
                ppid: 1,
                tty: tty.map(String::from),
                ..Process::new(
                    "00000001-5-6-0".parse().unwrap(),
                    format!("/usr/bin/{name}"),
                    vec![name.into()],
                )
            },
            ancestry: vec![],
            detail,
        }
    }

    fn connect(ip: &str) -> EventDetail {
        EventDetail::Connect(ConnectEvent {
            family: SocketFamily::Ipv4,
            protocol: TransportProtocol::Tcp,
            destination_ip: ip.parse().unwrap(),
            destination_port: 443,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Ok,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: false,
        })
    }

    fn run(h: &Heuristics, e: &Event) -> Vec<String> {
        let mut out = Vec::new();
        h.evaluate(e, &Settings::default(), &mut out);
        out.into_iter()
            .map(|d| format!("{}:{}", d.rule_id, d.severity))
            .collect()
    }

    #[test]
    fn script_engines_connecting_out_are_high_and_local_is_configurable() {
        let section = HeuristicsSection::default();
        let h = Heuristics::new(&section, vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            run(
                &h,
                &event("python3.11", Some("pts0"), connect("93.184.216.34"))
            ),
            [format!("{SCRIPT_ENGINE_NETWORK}:high")]
        );
        assert!(run(&h, &event("python3.11", Some("pts0"), connect("127.0.0.1"))).is_empty());
        assert!(run(&h, &event("curl", None, connect("93.184.216.34"))).is_empty());
        assert!(run(&h, &event("pythonista", None, connect("93.184.216.34"))).is_empty());
        let h = Heuristics::new(&section, vec![]);
        assert_eq!(
            run(&h, &event("bash", Some("pts0"), connect("127.0.0.1"))).len(),
            1
        );
    }

    #[test]
    fn background_engines_are_medium_unless_a_terminal_is_in_the_ancestry() {
        let h = Heuristics::new(&HeuristicsSection::default(), vec![]);
        let exec = || EventDetail::Exec(ExecEvent::default());
        assert_eq!(
            run(&h, &event("perl", None, exec())),
            [format!("{SCRIPT_ENGINE_BACKGROUND}:medium")]
        );
        assert!(run(&h, &event("perl", Some("pts1"), exec())).is_empty());
        let mut e = event("perl", None, exec());
        e.ancestry.push(Ancestor {
            exec_id: "00000001-1-1-0".parse().unwrap(),
            pid: 1,
            name: "sshd".into(),
            exe: "/usr/sbin/sshd".into(),
            argv: vec![],
            tty: Some("pts2".into()),
        });
        assert!(run(&h, &e).is_empty());
    }

    #[test]
    fn safe_paths_and_ignored_executables_are_exempt() {
        let section = HeuristicsSection {
            safe_paths: vec!["/usr/bin".into()],
            ..HeuristicsSection::default()
        };
        let h = Heuristics::new(&section, vec![]);
        assert!(run(&h, &event("python3", None, connect("1.1.1.1"))).is_empty());
        let section = HeuristicsSection {
            ignored_executables: vec!["/usr/bin/python3".into()],
            ..HeuristicsSection::default()
        };
        let h = Heuristics::new(&section, vec![]);
        assert!(run(&h, &event("python3", None, connect("1.1.1.1"))).is_empty());
    }

    #[test]
    fn the_policy_settings_switch_off_and_grade_each_heuristic() {
        let h = Heuristics::new(&HeuristicsSection::default(), vec![]);
        let mut settings = Settings::default();
        settings.script_engine_network.severity = Severity::Critical;
        settings.script_engine_network.actions = vec![ActionKind::Kill];
        settings.script_engine_background.enabled = false;
        let mut out = Vec::new();
        h.evaluate(
            &event("perl", None, connect("1.1.1.1")),
            &settings,
            &mut out,
        );
        h.evaluate(
            &event("perl", None, EventDetail::Exec(ExecEvent::default())),
            &settings,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].rule_id.as_str(), out[0].severity),
            (SCRIPT_ENGINE_NETWORK, Severity::Critical)
        );
        assert_eq!(out[0].actions, [ActionKind::Kill]);
    }

    #[test]
    fn live_processes_are_classified_like_events_are_scored() {
        let h = Heuristics::new(
            &HeuristicsSection::default(),
            vec!["127.0.0.0/8".parse().unwrap()],
        );
        let classes = |name: &str, tty: bool, dests: &[&str]| {
            let p = event(name, None, EventDetail::Exec(ExecEvent::default())).process;
            let mut out = Vec::new();
            h.classify(
                &p,
                || tty,
                dests
                    .iter()
                    .map(|d| (d.parse().unwrap(), 443, TransportProtocol::Tcp)),
                &Settings::default(),
                &mut out,
            );
            out
        };
        let both = classes("python3", false, &["127.0.0.1", "203.0.113.7"]);
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[0].0, Severity::High);
        assert!(both[0].1.contains("203.0.113.7:443/tcp"), "{}", both[0].1);
        assert_eq!(both[1].0, Severity::Medium);
        assert!(classes("python3", true, &["127.0.0.1"]).is_empty());
        assert!(classes("curl", false, &["203.0.113.7"]).is_empty());
    }
}
