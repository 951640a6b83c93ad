//! The actuator's enforcement state: active blocks, kill-on-exec entries and suspensions
//! with their expiry, and recently seen command nonces. Written atomically to
//! `<state_dir>/actuator-state.json` on every change, read back at start, so expiry happens
//! on time across collector restarts.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use protocol::{ExecId, FindingId, Timestamp};
use serde::{Deserialize, Serialize};

use super::freeze::Frozen;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Enforced {
    Block {
        cidr: String,
        port: Option<u16>,
    },
    KillOnExec {
        path: String,
        dev: u64,
        ino: u64,
    },
    Suspend {
        target: ExecId,
        /// The freezer cgroup holding it (none: stopped with SIGSTOP only).
        #[serde(default)]
        frozen: Option<Frozen>,
    },
}

impl Enforced {
    /// Whether `other` is the same enforcement (a suspension is the same whatever cgroup
    /// holds it).
    pub fn same_as(&self, other: &Enforced) -> bool {
        match (self, other) {
            (Enforced::Suspend { target: a, .. }, Enforced::Suspend { target: b, .. }) => a == b,
            _ => self == other,
        }
    }

    pub fn action_name(&self) -> &'static str {
        match self {
            Enforced::Block { .. } => "block",
            Enforced::KillOnExec { .. } => "kill_on_exec",
            Enforced::Suspend { .. } => "suspend",
        }
    }

    pub fn target_text(&self) -> String {
        match self {
            Enforced::Block {
                cidr,
                port: Some(p),
            } => format!("{cidr} port {p}"),
            Enforced::Block { cidr, port: None } => cidr.clone(),
            Enforced::KillOnExec { path, .. } => path.clone(),
            Enforced::Suspend { target, .. } => target.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub what: Enforced,
    /// `None`: until removed by a command.
    pub expires_at: Option<Timestamp>,
    pub command_id: String,
    #[serde(default)]
    pub finding_id: Option<FindingId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub entries: Vec<Entry>,
    /// Nonces of accepted commands with their issue time (kept for the replay window).
    pub nonces: Vec<(String, Timestamp)>,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> std::io::Result<StateFile> {
        std::fs::create_dir_all(dir)?;
        Ok(StateFile {
            path: dir.join("actuator-state.json"),
        })
    }

    pub fn load(&self) -> Result<State, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Writes to a temporary file, syncs it and renames it over the old one.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path()).unwrap();
        assert_eq!(file.load().unwrap(), State::default());
        let state = State {
            entries: vec![Entry {
                what: Enforced::Block {
                    cidr: "10.0.0.0/8".into(),
                    port: Some(443),
                },
                expires_at: Some(Timestamp::from_unix_nanos(5)),
                command_id: "c".into(),
                finding_id: None,
            }],
            nonces: vec![("n".into(), Timestamp::from_unix_nanos(1))],
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
    }
}
