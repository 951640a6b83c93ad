//! Container id from a process's cgroup path (docker, containerd, CRI-O, podman), cached by
//! cgroup id so only the first process of each cgroup costs a /proc read.

use crate::cache::CountedLru;

/// Cgroups remembered (containers come and go: the least recently seen are forgotten).
const CAPACITY: usize = 8192;

pub struct ContainerIds {
    by_cgroup: CountedLru<u64, Option<String>>,
}

impl Default for ContainerIds {
    fn default() -> Self {
        ContainerIds {
            by_cgroup: CountedLru::new(CAPACITY),
        }
    }
}

impl ContainerIds {
    /// Cgroups forgotten to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.by_cgroup.evicted()
    }

    pub fn lookup(&mut self, cgroup_id: u64, pid: u32) -> Option<String> {
        if let Some(known) = self.by_cgroup.get(&cgroup_id) {
            return known.clone();
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let id = text
            .lines()
            .find_map(|l| container_id_from_cgroup(l.splitn(3, ':').nth(2)?));
        // Every process of a cgroup v2 group is in the same container (or none). Id 0 means
        // "unknown" and is never cached.
        if cgroup_id != 0 {
            self.by_cgroup.insert(cgroup_id, id.clone());
        }
        id
    }
}

/// Finds a 64-hex-digit container id in a cgroup path such as
/// `/system.slice/docker-<id>.scope`, `/docker/<id>`, `/kubepods/.../cri-containerd-<id>.scope`,
/// `/machine.slice/libpod-<id>.scope` or `/crio-<id>`.
pub fn container_id_from_cgroup(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|segment| {
        let s = segment.strip_suffix(".scope").unwrap_or(segment);
        let s = s.rsplit(['-', ':']).next().unwrap_or(s);
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_runtime_layouts() {
        let id = "a".repeat(64);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/docker/{id}"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/kubepods/burstable/pod1/crio-{id}"),
        ] {
            assert_eq!(
                container_id_from_cgroup(&path).as_deref(),
                Some(id.as_str()),
                "{path}"
            );
        }
        assert_eq!(
            container_id_from_cgroup("/user.slice/session-2.scope"),
            None
        );
    }
}
