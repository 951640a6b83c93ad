//! `osprey baseline status|show EXE|accept FINDING_ID|forget EXE`: the learned baselines in
//! the host's history file. `accept` and `forget` are requests appended to the file; the
//! running collector applies them within `baseline.overrides_poll_secs` (a stopped one at its
//! next start) and publishes an audit record for each.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context};
use history::{
    baseline::report,
    store::{self, overrides},
};
use protocol::Timestamp;

use crate::history::DbArgs;

#[derive(Debug, clap::Subcommand)]
pub enum BaselineCommand {
    /// How much is learned, still learning, reported, waiting to be applied.
    Status {
        /// The collector's `baseline.learning_period_hours` (to count who still learns).
        #[arg(long, default_value_t = 24.0)]
        learning_hours: f64,
        #[command(flatten)]
        db: DbArgs,
    },
    /// What a program learned: by executable path, full program (`/usr/bin/python3
    /// /opt/app.py`) or script path.
    Show {
        exe: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Accept what a baseline finding reported: the finding stops for that pattern.
    Accept {
        finding_id: String,
        /// Wait up to this many seconds for the collector to apply it.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Forget what a program learned: it learns again from its next run.
    Forget {
        exe: String,
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn existing(db: &Path) -> anyhow::Result<()> {
    if !db.exists() {
        bail!(
            "no history file at {} (is the collector's history on? --db names another file)",
            db.display()
        );
    }
    Ok(())
}

/// Who asks: the user behind sudo, else the login name, else the uid.
fn actor() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("uid {}", own_uid()))
}

fn own_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

pub fn run(command: BaselineCommand) -> anyhow::Result<()> {
    match command {
        BaselineCommand::Status { learning_hours, db } => {
            existing(&db.db)?;
            let conn = store::open_read_only(&db.db)?;
            let s = report::status(&conn, learning_hours, Timestamp::now())?;
            for (kind, n) in &s.owners {
                let owners = match kind.as_str() {
                    "destination" => "programs",
                    "child" => "parents",
                    "hash" => "paths",
                    other => other,
                };
                println!("{kind:<12} {n} {owners}");
            }
            for (kind, state, n) in &s.entries {
                println!("{kind:<12} {n} {state}");
            }
            println!(
                "learning     {} programs (period {learning_hours} h)",
                s.learning
            );
            println!("reported     {} novel items recorded", s.novelties_recorded);
            println!(
                "waiting      {} accept/forget requests not applied yet",
                s.overrides_pending
            );
            for o in overrides::list(&conn, None, 5)? {
                println!(
                    "request #{} {} {} by {} at {}: {}",
                    o.id,
                    o.action,
                    o.target,
                    o.actor,
                    o.time,
                    o.result.as_deref().unwrap_or("not applied yet")
                );
            }
            Ok(())
        }
        BaselineCommand::Show { exe, db } => {
            existing(&db.db)?;
            let conn = store::open_read_only(&db.db)?;
            let owners = report::show(&conn, &exe)?;
            if owners.is_empty() {
                bail!("nothing learned for {exe}");
            }
            for o in owners {
                let user = if o.user.is_empty() {
                    String::new()
                } else {
                    format!(" (user {})", o.user)
                };
                println!(
                    "{} of {}{user}: first seen {}, last {}",
                    o.kind, o.owner, o.first, o.last
                );
                for i in o.items {
                    println!(
                        "  {:<40} {:<8} {:>6} hits  {} .. {}",
                        i.item, i.state, i.hits, i.first, i.last
                    );
                }
            }
            Ok(())
        }
        BaselineCommand::Accept {
            finding_id,
            wait,
            db,
        } => {
            existing(&db.db)?;
            let conn = store::open(&db.db)?;
            let items = overrides::novel_items(&conn, &finding_id)?;
            if items.is_empty() {
                bail!(
                    "finding {finding_id}: no baseline novelty recorded in {} (only baseline findings of this host can be accepted)",
                    db.db.display()
                );
            }
            let id = overrides::request(&conn, "accept", &finding_id, &actor(), Timestamp::now())?;
            for i in &items {
                println!("accepting {} {} for {}", i.kind, i.item, i.owner);
            }
            finish(&conn, id, wait)
        }
        BaselineCommand::Forget { exe, wait, db } => {
            existing(&db.db)?;
            let conn = store::open(&db.db)?;
            if report::show(&conn, &exe)?.is_empty() {
                bail!("nothing learned for {exe}");
            }
            let id = overrides::request(&conn, "forget", &exe, &actor(), Timestamp::now())?;
            finish(&conn, id, wait)
        }
    }
}

/// Reports the request, and with `--wait` its result once the collector applied it.
fn finish(conn: &rusqlite::Connection, id: i64, wait: Option<u64>) -> anyhow::Result<()> {
    let Some(secs) = wait else {
        println!("request #{id} recorded: the collector applies it within seconds (or at its next start)");
        return Ok(());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let o = overrides::get(conn, id)?.context("the request disappeared")?;
        if o.applied.is_some() {
            println!("request #{id} applied: {}", o.result.unwrap_or_default());
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "request #{id} recorded but not applied within {secs} s: is the collector running?"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
