//! What the baselines are keyed by: the program a process runs (its executable, or for a
//! script engine the script), the user running it, and destinations as learned networks.
//!
//! The identity rule (docs/history.md, "Identity"):
//! - a process whose executable name is a script engine runs the program
//!   `<exe> <script>`: the first argument after `argv[0]` that is not an option, made
//!   absolute with the process's cwd; inline code (`-c`, `-e`, `--eval`, `-Command`, ...)
//!   is the program `<exe> -c`; a module (`python -m mod`) is `<exe> -m mod`; no argument
//!   (interactive, stdin) is `<exe>` alone;
//! - any other process runs `<exe>`;
//! - the identity is (program, user); the executable's hash is tracked per path
//!   (`path → sha256` pairs), so a new hash for a known path is itself reported.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use protocol::{Process, TransportProtocol};

/// Executable names (or prefixes ending in `*`) that run scripts, as the collector's
/// `heuristics.script_engines` lists them: `python*` matches `python3.11` but not `pythonista`.
#[derive(Clone, Debug, Default)]
pub struct ScriptEngines {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl ScriptEngines {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut engines = ScriptEngines::default();
        for p in patterns {
            let p = p.as_ref().to_ascii_lowercase();
            match p.strip_suffix('*') {
                Some(prefix) => engines.prefixes.push(prefix.to_string()),
                None => engines.exact.push(p),
            }
        }
        engines
    }

    pub fn matches(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.exact.contains(&lower)
            || self.prefixes.iter().any(|pre| {
                lower.strip_prefix(pre.as_str()).is_some_and(|rest| {
                    rest.is_empty()
                        || rest.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
                })
            })
    }

    /// Is this process a script engine (by resolved name or by the name it was invoked as)?
    pub fn runs(&self, process: &Process) -> bool {
        let invoked = process
            .invoked_path
            .as_deref()
            .map(|i| i.rsplit(['/', '\\']).next().unwrap_or(i));
        self.matches(&process.name) || invoked.is_some_and(|i| self.matches(i))
    }
}

/// Options after which the interpreter runs code given on the command line.
const INLINE_CODE: &[&str] = &[
    "-c",
    "-e",
    "-E",
    "--eval",
    "-p",
    "--print",
    "-Command",
    "-command",
    "-EncodedCommand",
    "-encodedcommand",
    "/c",
    "/C",
];

/// What a process runs, as one text: `/usr/bin/curl`, `/usr/bin/python3 /opt/app/server.py`,
/// `/usr/bin/python3 -c`. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Program(Arc<str>);

impl Program {
    pub fn of(process: &Process, engines: &ScriptEngines) -> Program {
        Program::from_parts(
            &process.exe,
            &process.argv,
            process.cwd.as_deref(),
            engines.runs(process),
        )
    }

    /// The program of an executable run with `argv` in `cwd`; `script_engine` says whether
    /// the executable is an interpreter.
    pub fn from_parts(
        exe: &str,
        argv: &[String],
        cwd: Option<&str>,
        script_engine: bool,
    ) -> Program {
        if !script_engine {
            return Program(exe.into());
        }
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            if INLINE_CODE.contains(&arg.as_str()) {
                return Program(format!("{exe} {arg}").into());
            }
            if arg == "-m" {
                let module = args.next().map(String::as_str).unwrap_or("");
                return Program(format!("{exe} -m {module}").into());
            }
            if arg == "--" {
                return match args.next() {
                    Some(script) => Program(format!("{exe} {}", absolute(script, cwd)).into()),
                    None => Program(exe.into()),
                };
            }
            if arg.starts_with('-') || arg.is_empty() {
                continue;
            }
            return Program(format!("{exe} {}", absolute(arg, cwd)).into());
        }
        Program(exe.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is this the program of `exe` (any script), or exactly `text`, or a script `text`?
    /// How `osprey baseline show|forget EXE` selects.
    pub fn selected_by(&self, text: &str) -> bool {
        let s = self.as_str();
        s == text
            || s.strip_prefix(text)
                .is_some_and(|rest| rest.starts_with(' '))
            || s.strip_suffix(text).is_some_and(|rest| rest.ends_with(' '))
    }
}

impl From<&str> for Program {
    fn from(text: &str) -> Self {
        Program(text.into())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn absolute(script: &str, cwd: Option<&str>) -> String {
    match cwd {
        Some(cwd) if !script.starts_with('/') && !script.contains(":\\") => {
            let script = script.strip_prefix("./").unwrap_or(script);
            format!("{}/{script}", cwd.trim_end_matches('/'))
        }
        _ => script.to_string(),
    }
}

/// Who runs a program: the user name, or the uid when the name is unknown.
pub fn user_of(process: &Process) -> Arc<str> {
    match &process.user {
        Some(name) => name.as_str().into(),
        None => process.uid.to_string().into(),
    }
}

/// A program run by a user: the key destinations are learned under.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub program: Program,
    pub user: Arc<str>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (user {})", self.program, self.user)
    }
}

/// A destination as baselines learn it: protocol, network (the address cut to the configured
/// prefix) and port. Text form: `tcp 10.1.2.0/24:443`, `udp [2001:db8::]/64:53`,
/// `tcp 127.0.0.1:8080` (a full-length prefix is the address alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub protocol: Protocol,
    pub network: IpAddr,
    pub prefix: u8,
    pub port: u16,
}

/// [`TransportProtocol`] with an order (for stable listings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl From<TransportProtocol> for Protocol {
    fn from(p: TransportProtocol) -> Self {
        match p {
            TransportProtocol::Tcp => Protocol::Tcp,
            TransportProtocol::Udp => Protocol::Udp,
        }
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl Destination {
    /// `ip` cut to `prefix_v4`/`prefix_v6` bits (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn new(
        protocol: impl Into<Protocol>,
        ip: IpAddr,
        port: u16,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Destination {
        let (network, prefix) = match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let prefix = prefix_v4.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V4((bits & mask).into()), prefix)
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = prefix_v6.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V6((bits & mask).into()), prefix)
            }
        };
        Destination {
            protocol: protocol.into(),
            network,
            prefix,
            port,
        }
    }

    fn full_length(&self) -> bool {
        self.prefix == if self.network.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.protocol.as_str();
        match (self.network, self.full_length()) {
            (IpAddr::V4(a), true) => write!(f, "{proto} {a}:{}", self.port),
            (IpAddr::V4(a), false) => write!(f, "{proto} {a}/{}:{}", self.prefix, self.port),
            (IpAddr::V6(a), true) => write!(f, "{proto} [{a}]:{}", self.port),
            (IpAddr::V6(a), false) => write!(f, "{proto} [{a}]/{}:{}", self.prefix, self.port),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid destination {0:?}: expected e.g. `tcp 10.1.2.0/24:443` or `udp [2001:db8::]:53`")]
pub struct DestinationParseError(pub String);

impl FromStr for Destination {
    type Err = DestinationParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DestinationParseError(s.to_string());
        let (proto, rest) = s.split_once(' ').ok_or_else(err)?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(err()),
        };
        let (net, port) = rest.rsplit_once(':').ok_or_else(err)?;
        let port = port.parse().map_err(|_| err())?;
        let (addr, prefix) = match net.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| err())?)),
            None => (net, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let network: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Destination::new(protocol, network, port, prefix, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines() -> ScriptEngines {
        ScriptEngines::new(&["python*", "bash", "sh", "node", "perl*"])
    }

    fn program(exe: &str, argv: &[&str], cwd: Option<&str>) -> String {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let p = Process {
            cwd: cwd.map(String::from),
            ..Process::new("00000001-2-3-0".parse().unwrap(), exe, argv)
        };
        Program::of(&p, &engines()).to_string()
    }

    #[test]
    fn interpreters_are_known_by_their_script() {
        let py = "/usr/bin/python3.11";
        assert_eq!(
            program(
                py,
                &["python3", "-u", "/opt/app/server.py", "--port", "80"],
                None
            ),
            "/usr/bin/python3.11 /opt/app/server.py"
        );
        assert_eq!(
            program(py, &["python3", "./tool.py"], Some("/home/a/")),
            "/usr/bin/python3.11 /home/a/tool.py"
        );
        assert_eq!(
            program(py, &["python3", "-c", "import os"], None),
            "/usr/bin/python3.11 -c"
        );
        assert_eq!(
            program(py, &["python3", "-m", "http.server", "8000"], None),
            "/usr/bin/python3.11 -m http.server"
        );
        assert_eq!(program(py, &["python3"], None), "/usr/bin/python3.11");
        assert_eq!(
            program("/usr/bin/bash", &["bash", "--", "-weird.sh"], Some("/x")),
            "/usr/bin/bash /x/-weird.sh"
        );
        // Not an interpreter: arguments don't matter.
        assert_eq!(
            program("/usr/bin/curl", &["curl", "https://x"], None),
            "/usr/bin/curl"
        );
        // A name that only starts like an engine is not one.
        assert!(!engines().matches("pythonista"));
        assert!(engines().matches("Python3.12"));
    }

    #[test]
    fn programs_are_selected_by_exe_program_or_script() {
        let p = Program::from("/usr/bin/python3 /opt/app/server.py");
        assert!(p.selected_by("/usr/bin/python3"));
        assert!(p.selected_by("/opt/app/server.py"));
        assert!(p.selected_by("/usr/bin/python3 /opt/app/server.py"));
        assert!(!p.selected_by("/usr/bin/python"));
        assert!(!p.selected_by("server.py"));
    }

    #[test]
    fn destinations_are_cut_to_their_prefix_and_round_trip() {
        let d = Destination::new(
            TransportProtocol::Tcp,
            "10.1.2.3".parse().unwrap(),
            443,
            24,
            64,
        );
        assert_eq!(d.to_string(), "tcp 10.1.2.0/24:443");
        assert_eq!(d.to_string().parse::<Destination>().unwrap(), d);
        let mapped = Destination::new(
            TransportProtocol::Udp,
            "::ffff:10.1.2.9".parse().unwrap(),
            53,
            24,
            64,
        );
        assert_eq!(mapped.to_string(), "udp 10.1.2.0/24:53");
        let v6 = Destination::new(
            TransportProtocol::Tcp,
            "2001:db8:1:2:3::4".parse().unwrap(),
            22,
            24,
            64,
        );
        assert_eq!(v6.to_string(), "tcp [2001:db8:1:2::]/64:22");
        assert_eq!(v6.to_string().parse::<Destination>().unwrap(), v6);
        let exact = Destination::new(
            TransportProtocol::Tcp,
            "127.0.0.4".parse().unwrap(),
            8080,
            32,
            128,
        );
        assert_eq!(exact.to_string(), "tcp 127.0.0.4:8080");
        assert_eq!(exact.to_string().parse::<Destination>().unwrap(), exact);
        assert!("icmp 1.2.3.4:1".parse::<Destination>().is_err());
        assert!("tcp 1.2.3.4/40:1".parse::<Destination>().is_err());
    }
}
