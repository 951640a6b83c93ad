//! Finding ids already handled, kept in `<state_dir>/processed` (one id per line), so a
//! redelivered finding — after a crash, a restart or a missed ack — never acts twice.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
};

pub struct Processed {
    path: PathBuf,
    ids: HashSet<String>,
}

impl Processed {
    pub fn open(dir: &Path) -> std::io::Result<Processed> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("processed");
        let ids = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Processed { path, ids })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Records `id` durably (synced) before any action is taken for it.
    pub fn insert(&mut self, id: &str) -> std::io::Result<()> {
        if self.ids.insert(id.to_string()) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(format!("{id}\n").as_bytes())?;
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Processed::open(dir.path()).unwrap();
        p.insert("a").unwrap();
        p.insert("a").unwrap();
        let p = Processed::open(dir.path()).unwrap();
        assert!(p.contains("a") && !p.contains("b"));
    }
}
