//! What no command may touch: protected processes and files (by path and by device and
//! inode), interpreters (unless allowed), and destinations whose loss would cut the host off
//! (the NATS servers, its resolvers and default gateways, configured networks), plus any
//! block wider than the configured prefix.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use ipnet::IpNet;

use crate::detect::engines::ScriptEngines;

/// A destination that must stay reachable; `port: None` protects every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub net: IpNet,
    pub port: Option<u16>,
}

/// What makes a block acceptable.
#[derive(Clone, Debug)]
pub struct BlockLimits {
    /// Shortest prefix accepted (a /8 is wider than a /24).
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// resolv.conf-style files whose `nameserver`s are never blocked (read at every check,
    /// so a change applies at once).
    pub resolver_files: Vec<PathBuf>,
}

pub struct Protected {
    own_pid: u32,
    /// Protected executables; each is stat'ed at check time, so a replaced binary is still
    /// recognised by its new (device, inode).
    paths: Vec<PathBuf>,
    destinations: Vec<Endpoint>,
    limits: BlockLimits,
    engines: ScriptEngines,
    allow_interpreters: bool,
}

/// System directories where executables (protected ones, interpreters) are looked up.
const SYSTEM_BIN_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

fn bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(SYSTEM_BIN_DIRS.iter().map(PathBuf::from));
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Looks `name` up in $PATH and the system directories.
fn which(name: &str) -> Vec<PathBuf> {
    bin_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .filter(|p| p.exists())
        .collect()
}

impl Protected {
    /// The built-in set (pid 1, this collector, nats-server, sshd, osprey-responder) plus
    /// `extra` executables and `destinations`.
    pub fn new(
        extra: &[PathBuf],
        destinations: Vec<Endpoint>,
        limits: BlockLimits,
        engines: ScriptEngines,
        allow_interpreters: bool,
    ) -> Protected {
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in ["/proc/1/exe", "/proc/self/exe"] {
            if let Ok(target) = std::fs::read_link(p) {
                paths.push(target);
            }
        }
        if let Ok(me) = std::env::current_exe() {
            if let Some(dir) = me.parent() {
                paths.push(dir.join("osprey-responder"));
            }
        }
        for name in [
            "nats-server",
            "sshd",
            "osprey-responder",
            "osprey-collector",
        ] {
            paths.extend(which(name));
        }
        paths.extend(extra.iter().cloned());
        paths.sort();
        paths.dedup();
        Protected {
            own_pid: std::process::id(),
            paths,
            destinations,
            limits,
            engines,
            allow_interpreters,
        }
    }

    fn file_ids(&self) -> Vec<(u64, u64)> {
        self.paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }

    fn is_protected_file(&self, path: &Path, dev: u64, ino: u64) -> Option<String> {
        if self.file_ids().contains(&(dev, ino)) {
            return Some(format!(
                "{} is a protected executable (by device and inode)",
                path.display()
            ));
        }
        let shown = path.to_string_lossy();
        let shown = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
        if self.paths.iter().any(|p| p.as_os_str() == shown) {
            return Some(format!("{shown} is a protected executable"));
        }
        None
    }

    /// Refuses pid 1, this collector, and processes running a protected executable.
    pub fn check_process(&self, pid: u32) -> Result<(), String> {
        if pid == 1 {
            return Err("pid 1 is protected".into());
        }
        if pid == self.own_pid {
            return Err("the collector itself is protected".into());
        }
        let (path, dev, ino) = super::proc::exe_file(pid)
            .map_err(|e| format!("cannot identify the executable of pid {pid}: {e}"))?;
        match self.is_protected_file(&path, dev, ino) {
            Some(why) => Err(format!("pid {pid}: {why}")),
            None => Ok(()),
        }
    }

    /// Refuses protected executables, and interpreters and shells unless allowed (a
    /// kill-on-exec or a quarantine of one would take it away from the whole host).
    pub fn check_file(&self, path: &Path, dev: u64, ino: u64) -> Result<(), String> {
        if let Some(why) = self.is_protected_file(path, dev, ino) {
            return Err(why);
        }
        if self.allow_interpreters {
            return Ok(());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
        if self.engines.matches(name) || self.is_system_interpreter(dev, ino) {
            return Err(format!(
                "{} is an interpreter or shell: acting on it would break every script on the \
                 host (set actuator.allow_interpreters: true to allow it)",
                path.display()
            ));
        }
        Ok(())
    }

    /// Whether (dev, ino) is one of the script engines installed in the system directories,
    /// whatever name reached it (a hard link, a copy's name does not matter: only the file).
    fn is_system_interpreter(&self, dev: u64, ino: u64) -> bool {
        bin_dirs().iter().any(|dir| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.filter_map(Result::ok).any(|e| {
                    self.engines.matches(&e.file_name().to_string_lossy())
                        && std::fs::metadata(e.path())
                            .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
                })
            })
        })
    }

    /// Refuses a block that is too wide or would cover a destination the host needs.
    /// `net` must be canonical ([`protocol::net::canonical_net`]).
    pub fn check_destination(&self, net: &IpNet, port: Option<u16>) -> Result<(), String> {
        if protocol::net::covers_all_ipv4(net) || net.prefix_len() == 0 {
            return Err(format!("{net} covers every address"));
        }
        let min = match net {
            IpNet::V4(_) => self.limits.min_prefix_v4,
            IpNet::V6(_) => self.limits.min_prefix_v6,
        };
        if net.prefix_len() < min {
            return Err(format!(
                "{net} is wider than the widest block allowed (/{min}; actuator.block_min_prefix)"
            ));
        }
        let overlaps =
            |other: &IpNet| net.contains(&other.network()) || other.contains(&net.network());
        for d in &self.destinations {
            let same_port = port.is_none() || d.port.is_none() || port == d.port;
            if overlaps(&d.net) && same_port {
                return Err(match d.port {
                    Some(p) => format!("{net} covers protected destination {}:{p}", d.net.addr()),
                    None => format!("{net} covers protected network {}", d.net),
                });
            }
        }
        for (what, ip) in self.vital_addresses() {
            if overlaps(&IpNet::from(ip)) {
                return Err(format!("{net} covers {what} {ip}"));
            }
        }
        Ok(())
    }

    /// The resolvers and default gateways as they are now.
    fn vital_addresses(&self) -> Vec<(&'static str, IpAddr)> {
        let mut out: Vec<(&'static str, IpAddr)> = Vec::new();
        for file in &self.limits.resolver_files {
            for ip in resolvers(file) {
                out.push(("the resolver", ip));
            }
        }
        for ip in default_gateways() {
            out.push(("the default gateway", ip));
        }
        out
    }
}

/// `nameserver` addresses of a resolv.conf-style file (none when it is missing).
fn resolvers(path: &Path) -> Vec<IpAddr> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        .map(protocol::net::canonical_ip)
        .collect()
}

/// The gateways of the default routes (IPv4 from /proc/net/route, IPv6 from
/// /proc/net/ipv6_route).
fn default_gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(&"00000000"), Some(gw), Some(mask)) = (f.get(1), f.get(2), f.get(7)) {
            if *mask == "00000000" {
                if let Ok(raw) = u32::from_str_radix(gw, 16) {
                    // The address in network order, printed as a number of this (little-endian)
                    // machine.
                    let ip = Ipv4Addr::from(raw.to_le_bytes());
                    if !ip.is_unspecified() {
                        out.push(IpAddr::V4(ip));
                    }
                }
            }
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(&"00000000000000000000000000000000"), Some(&"00"), Some(gw)) =
            (f.first(), f.get(1), f.get(4))
        {
            if let Ok(raw) = u128::from_str_radix(gw, 16) {
                let ip = Ipv6Addr::from(raw);
                if !ip.is_unspecified() {
                    out.push(IpAddr::V6(ip));
                }
            }
        }
    }
    out
}

/// The addresses a NATS URL (or a comma-separated list) resolves to, as protected endpoints.
pub fn nats_endpoints(urls: &str) -> Vec<Endpoint> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for url in urls.split(',') {
        let rest = url.trim().split("://").last().unwrap_or("");
        let hostport = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        let with_port = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:4222")
        };
        if let Ok(addrs) = with_port.to_socket_addrs() {
            for a in addrs {
                out.push(Endpoint {
                    net: IpNet::from(protocol::net::canonical_ip(a.ip())),
                    port: Some(a.port()),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected(resolv: &Path) -> Protected {
        Protected::new(
            &[],
            vec![
                Endpoint {
                    net: "127.0.0.1/32".parse().unwrap(),
                    port: Some(4222),
                },
                Endpoint {
                    net: "10.9.0.0/16".parse().unwrap(),
                    port: None,
                },
            ],
            BlockLimits {
                min_prefix_v4: 24,
                min_prefix_v6: 64,
                resolver_files: vec![resolv.to_path_buf()],
            },
            ScriptEngines::new(&["bash".into(), "python*".into()]),
            false,
        )
    }

    fn check(p: &Protected, net: &str, port: Option<u16>) -> Result<(), String> {
        p.check_destination(&protocol::net::parse_net(net).unwrap(), port)
    }

    #[test]
    fn blocks_that_would_cut_the_host_off_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# local stub\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n",
        )
        .unwrap();
        let p = protected(&resolv);
        let refused = |net: &str, port: Option<u16>, why: &str| {
            let e = check(&p, net, port).expect_err(net);
            assert!(e.contains(why), "{net}: {e}");
        };
        refused("::ffff:127.0.0.53", None, "the resolver 127.0.0.53");
        refused("127.0.0.53/32", Some(53), "the resolver");
        refused("fe80::1/128", None, "the resolver");
        refused(
            "127.0.0.1/32",
            Some(4222),
            "protected destination 127.0.0.1:4222",
        );
        refused("10.9.3.0/24", Some(1), "protected network 10.9.0.0/16");
        refused("0.0.0.0/0", None, "every address");
        refused("::/0", None, "every address");
        refused("::ffff:0:0/96", None, "every address");
        refused(
            "10.0.0.0/8",
            None,
            "wider than the widest block allowed (/24",
        );
        refused("2001:db8::/32", None, "/64");
        for gw in default_gateways() {
            refused(&gw.to_string(), None, "the default gateway");
        }
        assert!(check(&p, "127.0.0.1/32", Some(8080)).is_ok());
        assert!(check(&p, "127.0.0.2", None).is_ok());
        assert!(check(&p, "::ffff:198.51.100.7", None).is_ok());
        assert!(check(&p, "2001:db8::/64", Some(443)).is_ok());
    }

    #[test]
    fn pid_1_the_collector_and_interpreters_are_protected() {
        let dir = tempfile::tempdir().unwrap();
        let p = protected(&dir.path().join("none"));
        assert!(p.check_process(1).is_err());
        assert!(p.check_process(std::process::id()).is_err());
        let bash = std::fs::metadata("/bin/bash").unwrap();
        let e = p
            .check_file(Path::new("/bin/bash"), bash.dev(), bash.ino())
            .unwrap_err();
        assert!(e.contains("interpreter or shell"), "{e}");
        // The same file under another name is still bash.
        let e = p
            .check_file(Path::new("/tmp/innocent"), bash.dev(), bash.ino())
            .unwrap_err();
        assert!(e.contains("interpreter or shell"), "{e}");
        let t = std::fs::metadata("/bin/true").unwrap();
        assert!(p
            .check_file(Path::new("/bin/true"), t.dev(), t.ino())
            .is_ok());
        assert_eq!(nats_endpoints("nats://127.0.0.1:5000")[0].port, Some(5000));
    }
}
