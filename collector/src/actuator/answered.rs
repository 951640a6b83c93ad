//! Commands already answered, by command id: idempotent commands. A command sent again with
//! the same id — the responder retrying after a crash or a timeout, re-signed with a fresh
//! nonce and time — gets the first answer back and is not executed a second time.
//!
//! Kept in `<state_dir>/answered.jsonl` (one line per answer), so a collector restart does not
//! reopen the window; answers older than [`KEEP`] or beyond [`CAPACITY`] are forgotten, oldest
//! first. Lines are written, not synced: a crashed or killed collector keeps what it wrote,
//! and a power loss means a reboot, after which a process command names an `ExecId` of the
//! previous boot and is refused anyway.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use protocol::{signing, Action, Command, CommandResult, CommandStatus, Timestamp};
use serde::{Deserialize, Serialize};

const FILE: &str = "answered.jsonl";
const KEEP: Duration = Duration::from_secs(24 * 3600);
const CAPACITY: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Answer {
    action: Action,
    /// The nonce it first came with: an identical copy is a replay, refused as such by the
    /// nonce check, not answered from here.
    nonce: String,
    result: CommandResult,
}

/// What a command's id says about it.
pub enum Seen {
    /// Answered before: this is the answer (nothing is executed).
    Answered(CommandResult),
    /// The id was answered for another action: refused, with this reason.
    Conflict(String),
}

pub struct Answered {
    path: PathBuf,
    answers: HashMap<String, Answer>,
    /// Ids oldest first, for expiry.
    order: VecDeque<String>,
    /// Lines in the file, to know when rewriting it pays.
    lines: usize,
    capacity: usize,
}

impl Answered {
    pub fn open(dir: &Path) -> Result<Answered, String> {
        Self::open_with(dir, CAPACITY)
    }

    fn open_with(dir: &Path, capacity: usize) -> Result<Answered, String> {
        let path = dir.join(FILE);
        let mut answered = Answered {
            path,
            answers: HashMap::new(),
            order: VecDeque::new(),
            lines: 0,
            capacity,
        };
        match fs::read_to_string(&answered.path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    answered.lines += 1;
                    match serde_json::from_str::<Answer>(line) {
                        Ok(answer) => answered.insert(answer),
                        // A line cut by a crash mid-write: that answer is lost, the rest stands.
                        Err(e) => {
                            tracing::warn!(path = %answered.path.display(), "actuator: skipping an unreadable answered-command line: {e}")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", answered.path.display())),
        }
        answered.expire(Timestamp::now());
        answered.rewrite();
        Ok(answered)
    }

    /// What is known of `command`'s id. Only a command sent again — re-signed, with a nonce
    /// of its own — that this host would obey (its own, signed by a trusted key) gets the
    /// earlier answer: a forged re-send learns nothing, and an identical copy is left to the
    /// replay check.
    pub fn seen(
        &self,
        command: &Command,
        host: &str,
        trusted: &[signing::PublicKey],
    ) -> Option<Seen> {
        let answer = self.answers.get(&command.id)?;
        if command.host != host
            || answer.nonce == command.nonce
            || signing::verify(command, trusted).is_err()
        {
            return None;
        }
        if answer.action != command.action {
            return Some(Seen::Conflict(format!(
                "command id {} was already used for another action ({})",
                command.id,
                answer.action.name()
            )));
        }
        Some(Seen::Answered(answer.result.clone()))
    }

    /// Records the answer to a command that was executed (or refused by its own checks).
    pub fn remember(
        &mut self,
        command: &Command,
        status: CommandStatus,
        reason: &str,
        output: Option<&str>,
    ) {
        if command.id.is_empty() {
            return;
        }
        let answer = Answer {
            action: command.action.clone(),
            nonce: command.nonce.clone(),
            result: CommandResult {
                command_id: command.id.clone(),
                host: command.host.clone(),
                status,
                reason: reason.to_string(),
                output: output.map(String::from),
                time: Timestamp::now(),
            },
        };
        let line = match serde_json::to_string(&answer) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("actuator: cannot record an answered command: {e}");
                return;
            }
        };
        let written = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), "actuator: cannot record an answered command (a re-send after a restart would run again): {e}");
        }
        self.lines += 1;
        self.insert(answer);
        self.expire(Timestamp::now());
        if self.lines > 2 * self.capacity {
            self.rewrite();
        }
    }

    fn insert(&mut self, answer: Answer) {
        let id = answer.result.command_id.clone();
        if self.answers.insert(id.clone(), answer).is_none() {
            self.order.push_back(id);
        }
    }

    fn expire(&mut self, now: Timestamp) {
        let oldest = now.unix_nanos() - KEEP.as_nanos() as i64;
        while let Some(id) = self.order.front() {
            let old = self
                .answers
                .get(id)
                .is_none_or(|a| a.result.time.unix_nanos() < oldest);
            if !old && self.order.len() <= self.capacity {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                self.answers.remove(&id);
            }
        }
    }

    /// Rewrites the file with the answers still kept.
    fn rewrite(&mut self) {
        let tmp = self.path.with_extension("jsonl.tmp");
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            for id in &self.order {
                if let Some(answer) = self.answers.get(id) {
                    let line = serde_json::to_string(answer).map_err(std::io::Error::other)?;
                    f.write_all(format!("{line}\n").as_bytes())?;
                }
            }
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        match result {
            Ok(()) => self.lines = self.order.len(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "actuator: cannot compact the answered-command file: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::signing::KeyPair;

    fn command(key: &KeyPair, id: &str, pid: u32) -> Command {
        let action = Action::Kill {
            target: format!("0000abcd-{pid}-1-0").parse().unwrap(),
            tree: false,
        };
        let mut c = Command::new("h", action, None);
        c.id = id.into();
        key.sign(&mut c);
        c
    }

    #[test]
    fn a_resent_command_gets_its_first_answer_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let trusted = [signing::PublicKey::from_base64(&key.public_base64()).unwrap()];
        let first = command(&key, "c1", 10);
        {
            let mut answered = Answered::open(dir.path()).unwrap();
            assert!(answered.seen(&first, "h", &trusted).is_none());
            answered.remember(&first, CommandStatus::Ok, "killed", None);
        }
        let answered = Answered::open(dir.path()).unwrap();
        // Re-signed with a new nonce and time, same id and action.
        let again = command(&key, "c1", 10);
        match answered.seen(&again, "h", &trusted) {
            Some(Seen::Answered(result)) => {
                assert_eq!(result.status, CommandStatus::Ok);
                assert_eq!(result.reason, "killed");
                assert_eq!(result.command_id, "c1");
            }
            _ => panic!("the first answer is returned"),
        }
        assert!(matches!(
            answered.seen(&command(&key, "c1", 11), "h", &trusted),
            Some(Seen::Conflict(_))
        ));
        // Not for another host, an unknown signer, an unsigned or an identical copy.
        assert!(answered.seen(&again, "g", &trusted).is_none());
        assert!(answered.seen(&first, "h", &trusted).is_none());
        let stranger = KeyPair::generate().unwrap();
        assert!(answered
            .seen(&command(&stranger, "c1", 10), "h", &trusted)
            .is_none());
        let mut unsigned = again.clone();
        unsigned.signature = None;
        assert!(answered.seen(&unsigned, "h", &trusted).is_none());
    }

    #[test]
    fn old_answers_are_forgotten_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let capacity = 10;
        let mut answered = Answered::open_with(dir.path(), capacity).unwrap();
        for i in 0..(3 * capacity) {
            answered.remember(
                &command(&key, &format!("c{i}"), 1),
                CommandStatus::Ok,
                "",
                None,
            );
        }
        assert_eq!(answered.answers.len(), capacity);
        assert!(!answered.answers.contains_key("c0"));
        assert!(answered
            .answers
            .contains_key(&format!("c{}", 3 * capacity - 1)));
        let lines = fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * capacity, "{lines}");
        let reopened = Answered::open_with(dir.path(), capacity).unwrap();
        assert_eq!(reopened.answers.len(), capacity);
        let lines = fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, capacity);
    }
}
