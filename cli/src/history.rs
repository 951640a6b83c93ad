//! `osprey history export|query|status`: the host's behaviour history, read from its SQLite
//! file (docs/history.md lists the columns).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use history::store::{
    self,
    read::{export, Filter, Format, Table},
};
use protocol::Timestamp;

/// The history file: `--db`, `OSPREY_HISTORY_DB`, or the collector's default.
#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// The history file (the collector's `history.path`).
    #[arg(long, env = "OSPREY_HISTORY_DB", default_value = history::config::DEFAULT_PATH)]
    pub db: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// Rows of one table as CSV or JSON lines (for training models, SIEMs, spreadsheets).
    Export(ExportArgs),
    /// Look rows up by executable, destination, process or time.
    Query(QueryArgs),
    /// Schema version, size, rows per table, what retention deleted.
    Status(DbArgs),
}

#[derive(Debug, clap::Args)]
pub struct Selection {
    /// connections, udp_flows, processes, findings or samples.
    #[arg(long, default_value = "connections", value_parser = parse_table)]
    pub table: Table,
    /// Rows from this far back (`90s`, `30m`, `24h`, `7d`, `2w`) or since an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Timestamp>,
    /// Rows before this point (same forms as --since).
    #[arg(long, value_parser = parse_since)]
    pub until: Option<Timestamp>,
    /// The executable path, or a glob over it (`*/python3*`).
    #[arg(long)]
    pub exe: Option<String>,
    /// An address or a network (`10.1.2.0/24`): connections and udp_flows.
    #[arg(long)]
    pub destination: Option<String>,
    /// One process (`bootid-pid-ticks-seq`).
    #[arg(long)]
    pub exec_id: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[arg(long, default_value = "csv", value_parser = parse_format)]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// The newest N rows.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// jsonl or csv (default: jsonl).
    #[arg(long, default_value = "jsonl", value_parser = parse_format)]
    pub format: Format,
}

fn parse_table(s: &str) -> Result<Table, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// `24h`-style durations back from now, or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 30m, 24h, 7d, or an RFC 3339 time"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h, d or w")),
    };
    let back = n.saturating_mul(secs).saturating_mul(1_000_000_000);
    Ok(Timestamp::from_unix_nanos(
        Timestamp::now().unix_nanos().saturating_sub(back),
    ))
}

impl Selection {
    fn filter(&self, limit: Option<usize>) -> Filter {
        Filter {
            since: self.since,
            until: self.until,
            exe: self.exe.clone(),
            destination: self.destination.clone(),
            exec_id: self.exec_id.clone(),
            limit,
        }
    }
}

fn open(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    if !db.exists() {
        anyhow::bail!(
            "no history file at {} (is the collector's history on? --db names another file)",
            db.display()
        );
    }
    Ok(store::open_read_only(db)?)
}

pub fn run(command: HistoryCommand) -> anyhow::Result<()> {
    match command {
        HistoryCommand::Export(args) => {
            let conn = open(&args.selection.db.db)?;
            let filter = args.selection.filter(None);
            let rows = match &args.out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    let rows = export(&conn, args.selection.table, &filter, args.format, &mut out)?;
                    out.flush()?;
                    rows
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    export(&conn, args.selection.table, &filter, args.format, &mut out)?
                }
            };
            tracing::info!(rows, table = args.selection.table.name(), "exported");
            Ok(())
        }
        HistoryCommand::Query(args) => {
            let conn = open(&args.selection.db.db)?;
            let filter = args.selection.filter(Some(args.limit));
            let mut out = std::io::stdout().lock();
            export(&conn, args.selection.table, &filter, args.format, &mut out)?;
            Ok(())
        }
        HistoryCommand::Status(db) => status(&db.db),
    }
}

fn status(db: &Path) -> anyhow::Result<()> {
    let conn = open(db)?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    println!(
        "history file  {} (schema {version}, {:.1} MB)",
        db.display(),
        size as f64 / 1048576.0
    );
    for table in Table::ALL {
        let rows: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| {
                r.get(0)
            })?;
        println!("{:<14}{rows} rows", table.name());
    }
    let mut stmt = conn.prepare(
        "SELECT table_name, reason, sum(rows), max(time_ns) FROM retention_log
         GROUP BY table_name, reason ORDER BY table_name, reason",
    )?;
    let deleted: Vec<(String, String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    if deleted.is_empty() {
        println!("retention     nothing deleted");
    }
    for (table, reason, rows, last) in deleted {
        println!(
            "retention     {rows} {table} rows deleted by {reason} (last {})",
            Timestamp::from_unix_nanos(last)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = Timestamp::now().unix_nanos();
        let day = parse_since("24h").unwrap().unix_nanos();
        assert!((now - day - 86_400_000_000_000).abs() < 5_000_000_000);
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").unwrap().to_string(),
            "2026-01-02T03:04:05.000000000Z"
        );
        assert!(parse_since("24 hours").unwrap_err().contains("unit"));
        assert!(parse_since("h").is_err());
    }
}
