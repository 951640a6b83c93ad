//! The image each pid runs, shared read-only with the actuator.
//!
//! /proc shows a pid and its start time, but only the process table knows whether the
//! process has exec'd since (which makes an `ExecId` stale), which file the kernel reported it
//! runs (so an action on "its executable" acts on that file and no other, even once the
//! process is gone), and who forked whom (so a tree kill finds children that were
//! reparented). Exited processes stay as long as the table keeps them.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use protocol::ExecId;

use crate::source::FileId;

/// What the actuator needs to know about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub exec_id: ExecId,
    /// The process it was forked from (as that process was then).
    pub parent: Option<ExecId>,
    /// The executable as the kernel reported it at exec: its identity and its path (in the
    /// process's own mount namespace).
    pub file: Option<FileId>,
    pub exe: String,
    pub exited: bool,
}

#[derive(Clone, Default)]
pub struct Images(Arc<RwLock<HashMap<u32, Image>>>);

impl Images {
    pub fn get(&self, pid: u32) -> Option<Image> {
        self.0.read().ok()?.get(&pid).cloned()
    }

    /// Live processes descending from `root` (children found by fork parentage, so a child
    /// reparented to init is still found, also through a parent that exited), `root`
    /// excluded.
    pub fn descendants(&self, root: &ExecId) -> Vec<Image> {
        let Ok(map) = self.0.read() else {
            return Vec::new();
        };
        let mut seen: Vec<&Image> = Vec::new();
        let mut frontier = vec![*root];
        while let Some(parent) = frontier.pop() {
            for image in map.values() {
                let child_of = image.parent.is_some_and(|p| p.same_process(&parent));
                if child_of && !seen.iter().any(|o| o.exec_id.same_process(&image.exec_id)) {
                    seen.push(image);
                    frontier.push(image.exec_id);
                }
            }
        }
        seen.into_iter().filter(|i| !i.exited).cloned().collect()
    }

    pub(super) fn set(&self, image: Image) {
        if let Ok(mut map) = self.0.write() {
            map.insert(image.exec_id.pid, image);
        }
    }

    pub(super) fn mark_exited(&self, pid: u32) {
        if let Ok(mut map) = self.0.write() {
            if let Some(image) = map.get_mut(&pid) {
                image.exited = true;
            }
        }
    }

    pub(super) fn remove(&self, pid: u32) {
        if let Ok(mut map) = self.0.write() {
            map.remove(&pid);
        }
    }
}
