//! Learned baselines, in memory (the collector's event loop asks them; no SQL on that path)
//! and persisted in the history file (loaded at start, changes flushed periodically):
//! - destinations per identity (program + user), as networks of the configured prefix;
//! - children per parent program;
//! - hashes per executable path.
//!
//! Each owner learns for `learning_period_hours` from when it is first seen; afterwards an
//! item it has not learned is novel (reported once per process, until an operator accepts
//! it). Items unseen for `expire_after_days` are forgotten.

mod book;
pub mod report;

use std::{collections::HashMap, sync::Arc};

use protocol::ExecId;
use rusqlite::Connection;

use book::{Book, ItemKey, OwnerKey};
pub use book::{EntryState, Seen};

use crate::{
    config::BaselineConfig,
    identity::{Destination, Identity, Program, Protocol},
    score::features::rarity,
    store::record::BaselineChanges,
    HistoryError,
};

pub const KIND_DESTINATION: &str = "destination";
pub const KIND_CHILD: &str = "child";
pub const KIND_HASH: &str = "hash";

const NANOS_PER_HOUR: f64 = 3_600e9;

pub struct Baseline {
    destinations: Book<Identity, Destination>,
    children: Book<Program, Program>,
    hashes: Book<Arc<str>, Arc<str>>,
    /// Known destinations per (protocol, port), over every identity: port rarity.
    port_known: HashMap<(Protocol, u16), u32>,
    /// Identities knowing each destination: novelty on the host vs. for the program.
    destination_known: HashMap<Destination, u32>,
    expire_ns: i64,
    prefix_v4: u8,
    prefix_v6: u8,
}

/// Counts for `osprey baseline status` and the collector's stats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaselineStatus {
    pub identities: usize,
    pub identities_learning: usize,
    pub destinations: usize,
    pub parents: usize,
    pub children: usize,
    pub paths: usize,
    pub hashes: usize,
    /// Items reported as novel and not accepted.
    pub novel: usize,
    /// Observations not learned because a limit was reached.
    pub untracked: u64,
}

impl Baseline {
    pub fn new(config: &BaselineConfig) -> Self {
        let learning_ns = (config.learning_period_hours * NANOS_PER_HOUR) as i64;
        let (owners, entries) = (config.max_identities, config.max_entries_per_owner);
        Baseline {
            destinations: Book::new(KIND_DESTINATION, learning_ns, owners, entries),
            children: Book::new(KIND_CHILD, learning_ns, owners, entries),
            hashes: Book::new(KIND_HASH, learning_ns, owners, entries),
            port_known: HashMap::new(),
            destination_known: HashMap::new(),
            expire_ns: (config.expire_after_days * 24.0 * NANOS_PER_HOUR) as i64,
            prefix_v4: config.prefix_v4,
            prefix_v6: config.prefix_v6,
        }
    }

    /// The baseline stored in `conn` (empty for a new file). Rows that do not parse (an item
    /// written by a newer Osprey) are skipped and counted in the log.
    pub fn load(conn: &Connection, config: &BaselineConfig) -> Result<Self, HistoryError> {
        let mut b = Baseline::new(config);
        let mut owners =
            conn.prepare("SELECT kind, owner, user, first_ns, last_ns FROM baseline_owners")?;
        let mut rows = owners.query([])?;
        while let Some(r) = rows.next()? {
            let (kind, owner, user): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let (first, last): (i64, i64) = (r.get(3)?, r.get(4)?);
            match kind.as_str() {
                KIND_DESTINATION => {
                    b.destinations
                        .load_owner(OwnerKey::from_parts(&owner, &user), first, last)
                }
                KIND_CHILD => {
                    b.children
                        .load_owner(OwnerKey::from_parts(&owner, &user), first, last)
                }
                KIND_HASH => b
                    .hashes
                    .load_owner(OwnerKey::from_parts(&owner, &user), first, last),
                _ => {}
            }
        }
        let mut entries = conn.prepare(
            "SELECT kind, owner, user, item, state, first_ns, last_ns, hits FROM baseline_entries",
        )?;
        let mut rows = entries.query([])?;
        let mut skipped = 0u64;
        while let Some(r) = rows.next()? {
            let (kind, owner, user, item, state): (String, String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let (first, last, hits): (i64, i64, u32) = (r.get(5)?, r.get(6)?, r.get(7)?);
            let Some(state) = EntryState::parse(&state) else {
                skipped += 1;
                continue;
            };
            let loaded = match kind.as_str() {
                KIND_DESTINATION => load_into(
                    &mut b.destinations,
                    &owner,
                    &user,
                    &item,
                    state,
                    first,
                    last,
                    hits,
                )
                .inspect(|d| {
                    if state.is_known() {
                        count_known(&mut b.port_known, &mut b.destination_known, d, 1);
                    }
                })
                .is_some(),
                KIND_CHILD => load_into(
                    &mut b.children,
                    &owner,
                    &user,
                    &item,
                    state,
                    first,
                    last,
                    hits,
                )
                .is_some(),
                KIND_HASH => load_into(
                    &mut b.hashes,
                    &owner,
                    &user,
                    &item,
                    state,
                    first,
                    last,
                    hits,
                )
                .is_some(),
                _ => false,
            };
            if !loaded {
                skipped += 1;
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "baseline rows this Osprey cannot read were skipped"
            );
        }
        Ok(b)
    }

    /// The destination as this baseline learns it (cut to the configured prefix).
    pub fn destination_of(
        &self,
        protocol: impl Into<Protocol>,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Destination {
        Destination::new(protocol, ip, port, self.prefix_v4, self.prefix_v6)
    }

    /// A program ran: its learning clock starts if this is its first time.
    pub fn program_seen(&mut self, identity: &Identity, now: i64) {
        self.destinations.touch(identity, now);
    }

    /// `identity` connected to `destination`.
    pub fn destination(
        &mut self,
        identity: &Identity,
        destination: &Destination,
        exec: ExecId,
        now: i64,
    ) -> Seen {
        let seen = self.destinations.observe(identity, destination, exec, now);
        if seen == Seen::Learning {
            count_known(
                &mut self.port_known,
                &mut self.destination_known,
                destination,
                1,
            );
        }
        seen
    }

    /// `parent` started `child`.
    pub fn child(&mut self, parent: &Program, child: &Program, exec: ExecId, now: i64) -> Seen {
        self.children.observe(parent, child, exec, now)
    }

    /// The executable at `path` has hash `sha256`.
    pub fn hash(&mut self, path: &str, sha256: &str, exec: ExecId, now: i64) -> Seen {
        let path: Arc<str> = path.into();
        self.hashes.observe(&path, &sha256.into(), exec, now)
    }

    /// What an owner knows, as text (the evidence of a novelty).
    pub fn known_destinations(&self, identity: &Identity) -> Vec<String> {
        self.destinations.known(identity)
    }

    pub fn known_children(&self, parent: &Program) -> Vec<String> {
        self.children.known(parent)
    }

    pub fn known_hashes(&self, path: &str) -> Vec<String> {
        self.hashes.known(&Arc::from(path))
    }

    /// 0: known for this identity; 0.5: known for another identity on the host; 1: new to
    /// the host. (Feature `f_destination_novelty`.)
    pub fn destination_novelty(&self, identity: &Identity, destination: &Destination) -> f32 {
        if self
            .destinations
            .state(identity, destination)
            .is_some_and(EntryState::is_known)
        {
            0.0
        } else if self.destination_known.contains_key(destination) {
            0.5
        } else {
            1.0
        }
    }

    /// 1 / (1 + known destinations on this protocol and port). (Feature `f_port_rarity`.)
    pub fn port_rarity(&self, destination: &Destination) -> f32 {
        rarity(
            self.port_known
                .get(&(destination.protocol, destination.port))
                .copied()
                .unwrap_or(0),
        )
    }

    /// How often `parent` started `child` (0 when never). (Feature `f_parent_rarity`.)
    pub fn pair_hits(&self, parent: &Program, child: &Program) -> u32 {
        self.children
            .owners
            .get(parent)
            .and_then(|o| o.entries.get(child))
            .map_or(0, |e| e.hits)
    }

    /// An operator accepted `item` for `owner` (stored kind and text, as a finding recorded
    /// them). `false` when the kind or item does not parse or a limit is reached.
    pub fn accept(&mut self, kind: &str, owner: &str, user: &str, item: &str, now: i64) -> bool {
        match kind {
            KIND_DESTINATION => {
                let Some(d) = Destination::parse(item) else {
                    return false;
                };
                let identity = Identity::from_parts(owner, user);
                match self.destinations.accept(&identity, d, now) {
                    Some(was_known) => {
                        if !was_known {
                            count_known(&mut self.port_known, &mut self.destination_known, &d, 1);
                        }
                        true
                    }
                    None => false,
                }
            }
            KIND_CHILD => self
                .children
                .accept(&Program::from(owner), Program::from(item), now)
                .is_some(),
            KIND_HASH => self
                .hashes
                .accept(&owner.into(), item.into(), now)
                .is_some(),
            _ => false,
        }
    }

    /// Forgets everything learned for the programs `target` selects (an exe path, a full
    /// program, or a script path): their destinations, children and hashes. Returns how
    /// many owners were removed.
    pub fn forget(&mut self, target: &str) -> usize {
        let removed = self
            .destinations
            .remove_owners(|i| i.program.selected_by(target));
        for (_, owner) in &removed {
            for (d, e) in &owner.entries {
                if e.state.is_known() {
                    count_known(&mut self.port_known, &mut self.destination_known, d, -1);
                }
            }
        }
        removed.len()
            + self.children.remove_owners(|p| p.selected_by(target)).len()
            + self
                .hashes
                .remove_owners(|path| Program::from(&**path).selected_by(target))
                .len()
    }

    /// Drops what was not seen for `expire_after_days`; returns how many items went.
    pub fn expire(&mut self, now: i64) -> usize {
        if self.expire_ns <= 0 {
            return 0;
        }
        let cutoff = now.saturating_sub(self.expire_ns);
        let gone = self.destinations.expire(cutoff);
        for d in &gone {
            count_known(&mut self.port_known, &mut self.destination_known, d, -1);
        }
        gone.len() + self.children.expire(cutoff).len() + self.hashes.expire(cutoff).len()
    }

    /// What changed since the last call, for the store.
    pub fn changes(&mut self) -> BaselineChanges {
        let mut out = BaselineChanges::default();
        self.destinations.changes(&mut out);
        self.children.changes(&mut out);
        self.hashes.changes(&mut out);
        out
    }

    pub fn status(&self, now: i64) -> BaselineStatus {
        fn novel<O, K>(book: &Book<O, K>) -> usize {
            book.owners
                .values()
                .map(|o| o.entries.values().filter(|e| !e.state.is_known()).count())
                .sum()
        }
        fn items<O, K>(book: &Book<O, K>) -> usize {
            book.owners.values().map(|o| o.entries.len()).sum()
        }
        BaselineStatus {
            identities: self.destinations.owners.len(),
            identities_learning: self
                .destinations
                .owners
                .values()
                .filter(|o| self.destinations.is_learning(o, now))
                .count(),
            destinations: items(&self.destinations),
            parents: self.children.owners.len(),
            children: items(&self.children),
            paths: self.hashes.owners.len(),
            hashes: items(&self.hashes),
            novel: novel(&self.destinations) + novel(&self.children) + novel(&self.hashes),
            untracked: self.destinations.untracked
                + self.children.untracked
                + self.hashes.untracked,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn load_into<O: OwnerKey, K: ItemKey>(
    book: &mut Book<O, K>,
    owner: &str,
    user: &str,
    item: &str,
    state: EntryState,
    first: i64,
    last: i64,
    hits: u32,
) -> Option<K> {
    let item = K::parse(item)?;
    book.load_entry(
        &O::from_parts(owner, user),
        item.clone(),
        state,
        first,
        last,
        hits,
    );
    Some(item)
}

fn count_known(
    ports: &mut HashMap<(Protocol, u16), u32>,
    destinations: &mut HashMap<Destination, u32>,
    d: &Destination,
    delta: i32,
) {
    let port = ports.entry((d.protocol, d.port)).or_default();
    *port = port.saturating_add_signed(delta);
    if *port == 0 {
        ports.remove(&(d.protocol, d.port));
    }
    let dest = destinations.entry(*d).or_default();
    *dest = dest.saturating_add_signed(delta);
    if *dest == 0 {
        destinations.remove(d);
    }
}
