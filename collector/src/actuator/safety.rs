//! What no command may touch: protected processes (by path and by device and inode) and
//! protected destinations (the NATS servers, configured networks).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use ipnet::IpNet;

/// A destination that must stay reachable; `port: None` protects every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub net: IpNet,
    pub port: Option<u16>,
}

pub struct Protected {
    own_pid: u32,
    /// Protected executables; each is stat'ed at check time, so a replaced binary is still
    /// recognised by its new (device, inode).
    paths: Vec<PathBuf>,
    destinations: Vec<Endpoint>,
}

/// Looks `name` up in $PATH and a few system directories.
fn which(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .filter(|p| p.exists())
        .collect()
}

impl Protected {
    /// The built-in set (pid 1, this collector, nats-server, sshd, osprey-responder) plus
    /// `extra` executables and `destinations`.
    pub fn new(extra: &[PathBuf], destinations: Vec<Endpoint>) -> Protected {
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

    /// Refuses protected executables (quarantine, kill-on-exec).
    pub fn check_file(&self, path: &Path) -> Result<(u64, u64), String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        match self.is_protected_file(path, meta.dev(), meta.ino()) {
            Some(why) => Err(why),
            None => Ok((meta.dev(), meta.ino())),
        }
    }

    /// Refuses a block that would cover a protected destination.
    pub fn check_destination(&self, net: &IpNet, port: Option<u16>) -> Result<(), String> {
        for d in &self.destinations {
            let overlaps = net.contains(&d.net.network()) || d.net.contains(&net.network());
            let same_port = port.is_none() || d.port.is_none() || port == d.port;
            if overlaps && same_port {
                return Err(match d.port {
                    Some(p) => format!("{net} covers protected destination {}:{p}", d.net.addr()),
                    None => format!("{net} covers protected network {}", d.net),
                });
            }
        }
        Ok(())
    }
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
                    net: IpNet::from(a.ip()),
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

    #[test]
    fn blocks_covering_nats_or_protected_networks_are_refused() {
        let p = Protected::new(
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
        );
        assert!(p
            .check_destination(&"127.0.0.0/8".parse().unwrap(), None)
            .is_err());
        assert!(p
            .check_destination(&"127.0.0.1/32".parse().unwrap(), Some(4222))
            .is_err());
        assert!(p
            .check_destination(&"127.0.0.1/32".parse().unwrap(), Some(8080))
            .is_ok());
        assert!(p
            .check_destination(&"127.0.0.2/32".parse().unwrap(), None)
            .is_ok());
        assert!(p
            .check_destination(&"10.9.3.0/24".parse().unwrap(), Some(1))
            .is_err());
        assert!(p
            .check_destination(&"0.0.0.0/0".parse().unwrap(), Some(1))
            .is_err());
        assert!(p.check_process(1).is_err());
        assert!(p.check_process(std::process::id()).is_err());
        assert_eq!(nats_endpoints("nats://127.0.0.1:5000")[0].port, Some(5000));
    }
}
