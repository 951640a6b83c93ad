//! uid → user name, from the passwd file, re-read when it changes.

use std::{collections::HashMap, path::PathBuf, time::SystemTime};

pub struct UserNames {
    path: PathBuf,
    names: HashMap<u32, String>,
    loaded_mtime: Option<SystemTime>,
}

impl UserNames {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let mut users = UserNames {
            path: path.into(),
            names: HashMap::new(),
            loaded_mtime: None,
        };
        users.reload();
        users
    }

    fn reload(&mut self) {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.loaded_mtime {
            return;
        }
        self.loaded_mtime = mtime;
        self.names = std::fs::read_to_string(&self.path)
            .map(|text| parse_passwd(&text))
            .unwrap_or_default();
    }

    /// The name of `uid`; an unknown uid triggers one re-read if the file changed since.
    pub fn name(&mut self, uid: u32) -> Option<String> {
        if let Some(n) = self.names.get(&uid) {
            return Some(n.clone());
        }
        self.reload();
        self.names.get(&uid).cloned()
    }
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_users_and_picks_up_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\n# c\nbad line\n").unwrap();
        let mut users = UserNames::new(&path);
        assert_eq!(users.name(0).as_deref(), Some("root"));
        assert_eq!(users.name(1000), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &path,
            "root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\n",
        )
        .unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(users.name(1000).as_deref(), Some("alice"));
    }
}
