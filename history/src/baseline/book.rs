//! One kind of baseline: owners (a program, a parent, a path), each with its learning clock
//! and the items it learned. Generic over the owner and item types; the three kinds are
//! destinations per identity, children per parent program, hashes per path.

use std::{
    collections::{hash_map::Entry, HashMap},
    hash::Hash,
    sync::Arc,
};

use protocol::{ExecId, Timestamp};

use crate::{
    identity::{Destination, Identity, Program},
    store::record::{EntryRow, OwnerRow},
};

/// How an item stands in its owner's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Seen during the owner's learning period.
    Learned,
    /// Reported as novel, then accepted by an operator.
    Accepted,
    /// Seen after the learning period and not accepted: reported once per process.
    Novel,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Learned => "learned",
            EntryState::Accepted => "accepted",
            EntryState::Novel => "novel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "learned" => Some(EntryState::Learned),
            "accepted" => Some(EntryState::Accepted),
            "novel" => Some(EntryState::Novel),
            _ => None,
        }
    }

    /// Part of what is normal for the owner.
    pub fn is_known(self) -> bool {
        self != EntryState::Novel
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub state: EntryState,
    pub first: i64,
    pub last: i64,
    pub hits: u32,
    dirty: bool,
    /// The last process this novel item was reported for.
    reported: Option<ExecId>,
}

#[derive(Clone, Debug)]
pub(crate) struct Owner<K> {
    pub first: i64,
    pub last: i64,
    dirty: bool,
    pub entries: HashMap<K, Item>,
}

/// What an observation means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The owner is learning: the item is (now) part of its baseline.
    Learning,
    /// Learned or accepted before.
    Known,
    /// Not in the baseline, first time for this process: report it.
    Novel,
    /// Not in the baseline, already reported for this process.
    Repeat,
    /// Not tracked: the owner or item limit is reached (counted).
    Untracked,
}

/// Owner keys as stored: (owner, user) text.
pub trait OwnerKey: Clone + Eq + Hash {
    fn parts(&self) -> (String, String);
    fn from_parts(owner: &str, user: &str) -> Self;
}

impl OwnerKey for Identity {
    fn parts(&self) -> (String, String) {
        (self.program.to_string(), self.user.to_string())
    }
    fn from_parts(owner: &str, user: &str) -> Self {
        Identity {
            program: Program::from(owner),
            user: user.into(),
        }
    }
}

impl OwnerKey for Program {
    fn parts(&self) -> (String, String) {
        (self.to_string(), String::new())
    }
    fn from_parts(owner: &str, _: &str) -> Self {
        Program::from(owner)
    }
}

impl OwnerKey for Arc<str> {
    fn parts(&self) -> (String, String) {
        (self.to_string(), String::new())
    }
    fn from_parts(owner: &str, _: &str) -> Self {
        owner.into()
    }
}

/// Items as stored: their text.
pub trait ItemKey: Clone + Eq + Hash + Ord {
    fn text(&self) -> String;
    fn parse(text: &str) -> Option<Self>;
}

impl ItemKey for Destination {
    fn text(&self) -> String {
        self.to_string()
    }
    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl ItemKey for Program {
    fn text(&self) -> String {
        self.to_string()
    }
    fn parse(text: &str) -> Option<Self> {
        Some(Program::from(text))
    }
}

impl ItemKey for Arc<str> {
    fn text(&self) -> String {
        self.to_string()
    }
    fn parse(text: &str) -> Option<Self> {
        Some(text.into())
    }
}

pub(crate) struct Book<O, K> {
    pub kind: &'static str,
    pub owners: HashMap<O, Owner<K>>,
    learning_ns: i64,
    max_owners: usize,
    max_entries: usize,
    /// Observations not learned because a limit was reached.
    pub untracked: u64,
    /// Owners and items removed since the last `changes`.
    removed_owners: Vec<(String, String)>,
    removed_entries: Vec<(String, String, String)>,
}

impl<O: OwnerKey, K: ItemKey> Book<O, K> {
    pub fn new(
        kind: &'static str,
        learning_ns: i64,
        max_owners: usize,
        max_entries: usize,
    ) -> Self {
        Book {
            kind,
            owners: HashMap::new(),
            learning_ns,
            max_owners,
            max_entries,
            untracked: 0,
            removed_owners: Vec::new(),
            removed_entries: Vec::new(),
        }
    }

    pub fn is_learning(&self, owner: &Owner<K>, now: i64) -> bool {
        now < owner.first.saturating_add(self.learning_ns)
    }

    /// The owner, created (its learning clock starting now) when there is room.
    pub fn touch(&mut self, owner: &O, now: i64) -> Option<&mut Owner<K>> {
        let full = self.owners.len() >= self.max_owners;
        // One hash of the key (the clone is two reference counts): this is the event path.
        let o = match self.owners.entry(owner.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(_) if full => {
                self.untracked += 1;
                return None;
            }
            Entry::Vacant(v) => v.insert(Owner {
                first: now,
                last: now,
                dirty: true,
                entries: HashMap::new(),
            }),
        };
        if o.last < now {
            o.last = now;
            o.dirty = true;
        }
        Some(o)
    }

    /// Records that `owner` did `item` (in process `exec`) at `now`, and says what it means.
    /// The returned state is the item's before this observation when it was known.
    pub fn observe(&mut self, owner: &O, item: &K, exec: ExecId, now: i64) -> Seen {
        let learning_ns = self.learning_ns;
        let max_entries = self.max_entries;
        let Some(o) = self.touch(owner, now) else {
            return Seen::Untracked;
        };
        let learning = now < o.first.saturating_add(learning_ns);
        if let Some(e) = o.entries.get_mut(item) {
            e.hits = e.hits.saturating_add(1);
            e.last = e.last.max(now);
            e.dirty = true;
            return match e.state {
                EntryState::Learned | EntryState::Accepted => Seen::Known,
                EntryState::Novel if e.reported == Some(exec) => Seen::Repeat,
                EntryState::Novel => {
                    e.reported = Some(exec);
                    Seen::Novel
                }
            };
        }
        if o.entries.len() >= max_entries {
            self.untracked += 1;
            return Seen::Untracked;
        }
        let state = if learning {
            EntryState::Learned
        } else {
            EntryState::Novel
        };
        o.entries.insert(
            item.clone(),
            Item {
                state,
                first: now,
                last: now,
                hits: 1,
                dirty: true,
                reported: (!learning).then_some(exec),
            },
        );
        if learning {
            Seen::Learning
        } else {
            Seen::Novel
        }
    }

    pub fn state(&self, owner: &O, item: &K) -> Option<EntryState> {
        self.owners.get(owner)?.entries.get(item).map(|e| e.state)
    }

    /// The items `owner` knows (learned or accepted), sorted, as text.
    pub fn known(&self, owner: &O) -> Vec<String> {
        let Some(o) = self.owners.get(owner) else {
            return Vec::new();
        };
        let mut items: Vec<&K> = o
            .entries
            .iter()
            .filter(|(_, e)| e.state.is_known())
            .map(|(k, _)| k)
            .collect();
        items.sort();
        items.into_iter().map(ItemKey::text).collect()
    }

    /// Makes `item` known for `owner` (an operator's accept). `Some(true)` when it was known
    /// already, `Some(false)` when it is new to the baseline, `None` at the owner limit.
    pub fn accept(&mut self, owner: &O, item: K, now: i64) -> Option<bool> {
        let o = self.touch(owner, now)?;
        let was_known = match o.entries.get_mut(&item) {
            Some(e) => {
                let known = e.state.is_known();
                e.state = EntryState::Accepted;
                e.dirty = true;
                known
            }
            None => {
                o.entries.insert(
                    item,
                    Item {
                        state: EntryState::Accepted,
                        first: now,
                        last: now,
                        hits: 0,
                        dirty: true,
                        reported: None,
                    },
                );
                false
            }
        };
        Some(was_known)
    }

    /// Removes the owners `select` picks; returns them with their items.
    pub fn remove_owners(&mut self, select: impl Fn(&O) -> bool) -> Vec<(O, Owner<K>)> {
        let keys: Vec<O> = self.owners.keys().filter(|o| select(o)).cloned().collect();
        keys.into_iter()
            .filter_map(|k| {
                let owner = self.owners.remove(&k)?;
                self.removed_owners.push(k.parts());
                Some((k, owner))
            })
            .collect()
    }

    /// Drops items unseen since `cutoff`, and owners left empty and unseen since then;
    /// returns the removed items that were known (for the rarity counts).
    pub fn expire(&mut self, cutoff: i64) -> Vec<K> {
        let mut gone = Vec::new();
        let mut empty = Vec::new();
        for (key, owner) in self.owners.iter_mut() {
            let (owner_text, user) = key.parts();
            owner.entries.retain(|item, e| {
                if e.last >= cutoff {
                    return true;
                }
                if e.state.is_known() {
                    gone.push(item.clone());
                }
                self.removed_entries
                    .push((owner_text.clone(), user.clone(), item.text()));
                false
            });
            if owner.entries.is_empty() && owner.last < cutoff {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.owners.remove(&key);
            self.removed_owners.push(key.parts());
        }
        gone
    }

    /// Loads a stored owner or item (at start).
    pub fn load_owner(&mut self, owner: O, first: i64, last: i64) {
        self.owners.insert(
            owner,
            Owner {
                first,
                last,
                dirty: false,
                entries: HashMap::new(),
            },
        );
    }

    pub fn load_entry(
        &mut self,
        owner: &O,
        item: K,
        state: EntryState,
        first: i64,
        last: i64,
        hits: u32,
    ) {
        let o = self.owners.entry(owner.clone()).or_insert(Owner {
            first,
            last,
            dirty: true,
            entries: HashMap::new(),
        });
        o.entries.insert(
            item,
            Item {
                state,
                first,
                last,
                hits,
                dirty: false,
                reported: None,
            },
        );
    }

    /// Rows for what changed since the last call (and clears the marks).
    pub fn changes(&mut self, out: &mut crate::store::record::BaselineChanges) {
        let kind = self.kind;
        for (key, owner) in self.owners.iter_mut() {
            let dirty_entries = owner.entries.values().any(|e| e.dirty);
            if !owner.dirty && !dirty_entries {
                continue;
            }
            let (owner_text, user) = key.parts();
            if owner.dirty {
                out.owners.push(OwnerRow {
                    kind,
                    owner: owner_text.clone(),
                    user: user.clone(),
                    first: Timestamp::from_unix_nanos(owner.first),
                    last: Timestamp::from_unix_nanos(owner.last),
                });
                owner.dirty = false;
            }
            for (item, e) in owner.entries.iter_mut().filter(|(_, e)| e.dirty) {
                out.entries.push(EntryRow {
                    kind,
                    owner: owner_text.clone(),
                    user: user.clone(),
                    item: item.text(),
                    state: e.state.as_str(),
                    first: Timestamp::from_unix_nanos(e.first),
                    last: Timestamp::from_unix_nanos(e.last),
                    hits: e.hits,
                });
                e.dirty = false;
            }
        }
        out.removed_owners.extend(
            self.removed_owners
                .drain(..)
                .map(|(owner, user)| (kind, owner, user)),
        );
        out.removed_entries.extend(
            self.removed_entries
                .drain(..)
                .map(|(owner, user, item)| (kind, owner, user, item)),
        );
    }
}
