//! The responder's write-ahead journal (`<state_dir>/journal.jsonl`): what it decided, before
//! it acts on it.
//!
//! Handling a finding or an approval first *decides* everything — audit records to write,
//! commands to send, actions to hold for approval, rate-limit counts — and commits all of it
//! in one synced append; only then are the effects carried out, each marked done afterwards.
//! A responder killed anywhere in between finds, when it starts again, the effects not yet
//! done and carries them out: a command is sent again with the same id (the host's actuator
//! answers a repeated id with its first answer instead of acting twice), an audit record is
//! written. So a crash between deciding and sending neither loses nor doubles an action.
//! (Done marks are written but not synced: a process crash keeps them, a power loss may
//! repeat an effect — which commands tolerate by their id.)
//!
//! It also holds the findings already decided (keyed by the subject's host and the finding
//! id, so a finding redelivered after a crash or a lost ack is not acted on twice), the
//! actions awaiting approval (they survive restarts; one whose time ran out while the
//! responder was down expires at the next tick), and the last hour of sent actions (rate
//! limits survive restarts too).

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use protocol::{AuditRecord, Timestamp};
use serde::{Deserialize, Serialize};

use crate::responder::Planned;

const FILE: &str = "journal.jsonl";
/// Rewrite the journal (dropping what is done) after this many appended records.
const COMPACT_AFTER: usize = 50_000;
const HOUR_NANOS: i64 = 3600 * 1_000_000_000;

/// Something the responder will do once its decision is committed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Write an audit record (file and bus).
    Audit { record: Box<AuditRecord> },
    /// Sign and send a command with this id, then audit the host's answer.
    Send {
        command_id: String,
        planned: Box<Planned>,
        /// Why it is sent (policy rule, approving operator), for the audit record.
        why: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_id: Option<String>,
    },
    /// Post a notification, then audit it.
    Notify { planned: Box<Planned>, why: String },
}

/// An action awaiting an operator's approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub planned: Planned,
    /// The policy rule that asked for it.
    pub rule: String,
    pub deadline: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Decided {
        key: String,
    },
    Effect {
        id: u64,
        effect: Effect,
    },
    Done {
        id: u64,
    },
    Pending {
        id: String,
        pending: Box<Pending>,
    },
    Resolved {
        id: String,
    },
    Counted {
        host: String,
        action: String,
        at: Timestamp,
    },
}

/// One decision, committed at once.
#[derive(Debug, Default)]
pub struct Decision {
    /// The finding key now decided (none for approvals and expiries).
    pub decided: Option<String>,
    pub effects: Vec<Effect>,
    pub pending: Vec<(String, Pending)>,
    /// Pending actions this decision settles.
    pub resolved: Vec<String>,
    /// (host, action) of actions counted against the rate limits now.
    pub counted: Vec<(String, String)>,
}

/// A sent action counted against a rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub host: String,
    pub action: String,
    pub at: Timestamp,
}

pub struct Journal {
    path: PathBuf,
    decided: HashSet<String>,
    /// Effects committed and not yet done, by id (in commit order).
    open: BTreeMap<u64, Effect>,
    pending: BTreeMap<String, Pending>,
    counted: Vec<Counted>,
    next_id: u64,
    appended: usize,
}

impl Journal {
    /// Reads the journal (a line cut short by a crash is skipped) and compacts it.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut journal = Journal {
            path,
            decided: HashSet::new(),
            open: BTreeMap::new(),
            pending: BTreeMap::new(),
            counted: Vec::new(),
            next_id: 1,
            appended: 0,
        };
        match fs::read_to_string(&journal.path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<Record>(line) {
                        Ok(record) => journal.apply(record),
                        Err(e) => {
                            tracing::warn!(path = %journal.path.display(), "skipping an unreadable journal line (cut by a crash?): {e}")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        journal.compact()?;
        Ok(journal)
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Decided { key } => {
                self.decided.insert(key);
            }
            Record::Effect { id, effect } => {
                self.next_id = self.next_id.max(id + 1);
                self.open.insert(id, effect);
            }
            Record::Done { id } => {
                self.open.remove(&id);
            }
            Record::Pending { id, pending } => {
                self.pending.insert(id, *pending);
            }
            Record::Resolved { id } => {
                self.pending.remove(&id);
            }
            Record::Counted { host, action, at } => self.counted.push(Counted { host, action, at }),
        }
    }

    pub fn is_decided(&self, key: &str) -> bool {
        self.decided.contains(key)
    }

    /// Effects committed but not done (after a crash), in commit order.
    pub fn open_effects(&self) -> Vec<(u64, Effect)> {
        self.open
            .iter()
            .map(|(id, effect)| (*id, effect.clone()))
            .collect()
    }

    pub fn pending(&self) -> &BTreeMap<String, Pending> {
        &self.pending
    }

    /// Sent actions of the last hour.
    pub fn counted(&self) -> &[Counted] {
        &self.counted
    }

    /// Commits a decision with one synced append; returns its effects with their ids, to be
    /// carried out and then marked [`Journal::done`].
    pub fn commit(&mut self, decision: Decision) -> io::Result<Vec<(u64, Effect)>> {
        let now = Timestamp::now();
        let mut records = Vec::new();
        if let Some(key) = decision.decided {
            records.push(Record::Decided { key });
        }
        for (host, action) in decision.counted {
            records.push(Record::Counted {
                host,
                action,
                at: now,
            });
        }
        for (id, pending) in decision.pending {
            records.push(Record::Pending {
                id,
                pending: Box::new(pending),
            });
        }
        for id in decision.resolved {
            records.push(Record::Resolved { id });
        }
        let mut effects = Vec::new();
        for effect in decision.effects {
            let id = self.next_id;
            self.next_id += 1;
            effects.push((id, effect.clone()));
            records.push(Record::Effect { id, effect });
        }
        self.append(&records, true)?;
        for record in records {
            self.apply(record);
        }
        Ok(effects)
    }

    /// Marks an effect carried out.
    pub fn done(&mut self, id: u64) {
        let record = Record::Done { id };
        if let Err(e) = self.append(std::slice::from_ref(&record), false) {
            tracing::error!(path = %self.path.display(), "cannot mark an effect done in the journal (it would be repeated after a restart): {e}");
        }
        self.apply(record);
        if self.appended > COMPACT_AFTER {
            if let Err(e) = self.compact() {
                tracing::warn!(path = %self.path.display(), "cannot compact the journal: {e}");
            }
        }
    }

    fn append(&mut self, records: &[Record], sync: bool) -> io::Result<()> {
        let mut text = String::new();
        for record in records {
            text.push_str(&serde_json::to_string(record).map_err(io::Error::other)?);
            text.push('\n');
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(text.as_bytes())?;
        if sync {
            file.sync_data()?;
        }
        self.appended += records.len();
        Ok(())
    }

    /// Rewrites the journal with what still matters: decided keys, open effects, pending
    /// actions, the last hour of counts.
    fn compact(&mut self) -> io::Result<()> {
        let hour_ago = Timestamp::now().unix_nanos() - HOUR_NANOS;
        self.counted.retain(|c| c.at.unix_nanos() > hour_ago);
        let mut records: Vec<Record> = self
            .decided
            .iter()
            .map(|key| Record::Decided { key: key.clone() })
            .collect();
        records.extend(self.counted.iter().map(|c| Record::Counted {
            host: c.host.clone(),
            action: c.action.clone(),
            at: c.at,
        }));
        records.extend(self.pending.iter().map(|(id, p)| Record::Pending {
            id: id.clone(),
            pending: Box::new(p.clone()),
        }));
        records.extend(self.open.iter().map(|(id, effect)| Record::Effect {
            id: *id,
            effect: effect.clone(),
        }));
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            for record in &records {
                let line = serde_json::to_string(record).map_err(io::Error::other)?;
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.appended = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Decision as Verdict;

    fn audit(reason: &str) -> Effect {
        Effect::Audit {
            record: Box::new(AuditRecord::new(
                "responder",
                "h",
                "kill",
                Verdict::DryRun,
                reason,
                "not sent",
            )),
        }
    }

    #[test]
    fn committed_effects_not_done_come_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let effects = journal
            .commit(Decision {
                decided: Some("h/f1".into()),
                effects: vec![audit("one"), audit("two")],
                counted: vec![("h".into(), "kill".into())],
                ..Default::default()
            })
            .unwrap();
        journal.done(effects[0].0);
        drop(journal);

        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.is_decided("h/f1") && !journal.is_decided("g/f1"));
        let open = journal.open_effects();
        assert_eq!(open, vec![effects[1].clone()]);
        assert_eq!(journal.counted().len(), 1);
        // Ids continue after the ones in the file.
        let mut journal = journal;
        let more = journal
            .commit(Decision {
                effects: vec![audit("three")],
                ..Default::default()
            })
            .unwrap();
        assert!(more[0].0 > effects[1].0);
    }

    #[test]
    fn a_line_cut_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal
            .commit(Decision {
                decided: Some("h/f1".into()),
                ..Default::default()
            })
            .unwrap();
        drop(journal);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        file.write_all(b"{\"kind\":\"decided\",\"ke").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.is_decided("h/f1"));
    }
}
