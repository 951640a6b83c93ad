//! The read side: export (CSV or JSON lines) and simple look-ups, with one column list per
//! table (documented in docs/history.md, "Export columns").

use std::{collections::VecDeque, io::Write, net::IpAddr, str::FromStr};

use protocol::Timestamp;
use rusqlite::{types::ValueRef, Connection};

use crate::{identity::Destination, score::FEATURE_NAMES, HistoryError};

/// The tables one can export or query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Connections,
    UdpFlows,
    Processes,
    Findings,
    Samples,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Connections,
        Table::UdpFlows,
        Table::Processes,
        Table::Findings,
        Table::Samples,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Connections => "connections",
            Table::UdpFlows => "udp_flows",
            Table::Processes => "processes",
            Table::Findings => "findings",
            Table::Samples => "samples",
        }
    }

    /// The export columns, in order.
    pub fn columns(self) -> Vec<Column> {
        use Kind::*;
        let c = |name: &'static str, kind: Kind| Column { name, kind };
        let mut cols = match self {
            Table::Connections => vec![
                c("exec_id", Text),
                c("exe", Text),
                c("protocol", Text),
                c("destination", Text),
                c("port", Integer),
                c("source_port", Integer),
                c("outcome", Text),
                c("start", Time("start_ns")),
                c("end", Time("end_ns")),
                c("duration_ms", Integer),
                c("bytes_sent", Integer),
                c("bytes_received", Integer),
                c("score", Real),
                c("label", Text),
            ],
            Table::UdpFlows => vec![
                c("exec_id", Text),
                c("exe", Text),
                c("destination", Text),
                c("port", Integer),
                c("first", Time("first_ns")),
                c("last", Time("last_ns")),
                c("datagrams", Integer),
                c("score", Real),
                c("label", Text),
            ],
            Table::Processes => vec![
                c("exec_id", Text),
                c("pid", Integer),
                c("exe", Text),
                c("sha256", Text),
                c("argv", Json),
                c("user", Text),
                c("uid", Integer),
                c("parent_exec_id", Text),
                c("start", Time("start_ns")),
                c("end", Time("end_ns")),
                c("exit_code", Integer),
                c("signal", Integer),
            ],
            Table::Findings => vec![
                c("id", Text),
                c("time", Time("time_ns")),
                c("exec_id", Text),
                c("exe", Text),
                c("detector", Text),
                c("rule_id", Text),
                c("severity", Text),
                c("title", Text),
            ],
            Table::Samples => vec![
                c("exec_id", Text),
                c("time", Time("time_ns")),
                c("cpu_percent", Real),
                c("rss_bytes", Integer),
            ],
        };
        if matches!(self, Table::Connections | Table::UdpFlows) {
            cols.extend(FEATURE_NAMES.iter().map(|&name| c(name, Real)));
        }
        cols
    }

    /// The time column filters and ordering use.
    fn time_column(self) -> &'static str {
        match self {
            Table::Connections | Table::Processes => "start_ns",
            Table::UdpFlows => "first_ns",
            Table::Findings | Table::Samples => "time_ns",
        }
    }

    fn has_exe(self) -> bool {
        !matches!(self, Table::Samples)
    }

    fn has_destination(self) -> bool {
        matches!(self, Table::Connections | Table::UdpFlows)
    }
}

impl FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s || t.name().replace('_', "-") == s)
            .ok_or_else(|| {
                format!(
                    "unknown table {s:?}: expected one of {}",
                    Table::ALL.map(Table::name).join(", ")
                )
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Real,
    /// Nanoseconds in the named column, exported as RFC 3339.
    Time(&'static str),
    /// A JSON array kept as text (argv): a JSON value in JSON lines, its text in CSV.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

impl Column {
    fn sql(&self) -> &'static str {
        match self.kind {
            Kind::Time(column) => column,
            _ => self.name,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Format::Csv),
            "jsonl" | "json" => Ok(Format::Jsonl),
            _ => Err(format!("unknown format {s:?}: expected csv or jsonl")),
        }
    }
}

/// Which rows: all filters are optional and combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// The executable path (exact), or a `*` glob over it (`*/python3*`).
    pub exe: Option<String>,
    /// An address or a network (`10.1.2.0/24`); connections and UDP flows only.
    pub destination: Option<String>,
    pub exec_id: Option<String>,
    /// Most rows, newest last.
    pub limit: Option<usize>,
}

/// Writes the rows of `table` that pass `filter` to `out`; returns how many.
pub fn export(
    conn: &Connection,
    table: Table,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, HistoryError> {
    let columns = table.columns();
    let network = match &filter.destination {
        Some(_) if !table.has_destination() => {
            return Err(HistoryError::Query(format!(
                "--destination applies to connections and udp_flows, not {}",
                table.name()
            )))
        }
        Some(d) => Some(parse_network(d)?),
        None => None,
    };
    if filter.exe.is_some() && !table.has_exe() {
        return Err(HistoryError::Query(format!(
            "--exe does not apply to {}",
            table.name()
        )));
    }
    let time = table.time_column();
    let mut sql = format!(
        "SELECT {} FROM {}",
        columns
            .iter()
            .map(Column::sql)
            .collect::<Vec<_>>()
            .join(", "),
        table.name()
    );
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |condition: String, value: rusqlite::types::Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };
    if let Some(since) = filter.since {
        bind(format!("{time} >= ?"), since.unix_nanos().into());
    }
    if let Some(until) = filter.until {
        bind(format!("{time} < ?"), until.unix_nanos().into());
    }
    if let Some(exe) = &filter.exe {
        bind("exe GLOB ?".into(), exe.clone().into());
    }
    if let Some(exec_id) = &filter.exec_id {
        bind("exec_id = ?".into(), exec_id.clone().into());
    }
    // An exact address is looked up by the index; a network is filtered row by row.
    let network = match network {
        Some((ip, prefix)) if prefix == full(&ip) => {
            bind("destination = ?".into(), ip.to_string().into());
            None
        }
        other => other,
    };
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {time}, rowid"));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let destination_index = columns.iter().position(|c| c.name == "destination");
    // With a limit, the newest `limit` rows (oldest first).
    let mut selected: VecDeque<Vec<Cell>> = VecDeque::new();
    let mut sink = match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(columns.iter().map(|c| c.name))
                .map_err(csv_error)?;
            Sink::Csv(Box::new(w))
        }
        Format::Jsonl => Sink::Jsonl(out),
    };
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        let cells: Vec<Cell> = (0..columns.len())
            .map(|i| Cell::of(row.get_ref(i)?, columns[i].kind))
            .collect::<Result<_, rusqlite::Error>>()?;
        if let (Some((net, prefix)), Some(i)) = (network, destination_index) {
            let in_network = match &cells[i] {
                Cell::Text(text) => text
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| same_network(ip, net, prefix)),
                _ => false,
            };
            if !in_network {
                continue;
            }
        }
        match filter.limit {
            Some(limit) => {
                if selected.len() == limit {
                    selected.pop_front();
                }
                if limit > 0 {
                    selected.push_back(cells);
                }
            }
            None => {
                sink.write(&columns, &cells)?;
                count += 1;
            }
        }
    }
    for cells in &selected {
        sink.write(&columns, cells)?;
        count += 1;
    }
    sink.flush()?;
    Ok(count)
}

enum Sink<'a> {
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
    Jsonl(&'a mut dyn Write),
}

impl Sink<'_> {
    fn write(&mut self, columns: &[Column], cells: &[Cell]) -> Result<(), HistoryError> {
        match self {
            Sink::Csv(w) => w
                .write_record(cells.iter().map(Cell::text))
                .map_err(csv_error),
            Sink::Jsonl(out) => {
                let object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .zip(cells)
                    .map(|(c, cell)| (c.name.to_string(), cell.json()))
                    .collect();
                serde_json::to_writer(&mut **out, &object)
                    .map_err(|e| HistoryError::Query(e.to_string()))?;
                out.write_all(b"\n")
                    .map_err(|e| HistoryError::Query(e.to_string()))
            }
        }
    }

    fn flush(&mut self) -> Result<(), HistoryError> {
        match self {
            Sink::Csv(w) => w.flush(),
            Sink::Jsonl(out) => out.flush(),
        }
        .map_err(|e| HistoryError::Query(e.to_string()))
    }
}

fn csv_error(e: csv::Error) -> HistoryError {
    HistoryError::Query(format!("writing CSV: {e}"))
}

/// One exported value.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Json(serde_json::Value),
}

impl Cell {
    fn of(value: ValueRef, kind: Kind) -> rusqlite::Result<Cell> {
        Ok(match (value, kind) {
            (ValueRef::Null, _) => Cell::Null,
            (ValueRef::Integer(n), Kind::Time(_)) => {
                Cell::Text(Timestamp::from_unix_nanos(n).to_string())
            }
            (ValueRef::Integer(n), _) => Cell::Integer(n),
            (ValueRef::Real(x), _) => Cell::Real(x),
            (ValueRef::Text(t), Kind::Json) => {
                let text = String::from_utf8_lossy(t);
                Cell::Json(
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.into())),
                )
            }
            (ValueRef::Text(t), _) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
            (ValueRef::Blob(b), _) => Cell::Text(String::from_utf8_lossy(b).into_owned()),
        })
    }

    fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Integer(n) => n.to_string(),
            Cell::Real(x) => x.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Json(v) => v.to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Integer(n) => (*n).into(),
            Cell::Real(x) => {
                serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into)
            }
            Cell::Text(t) => t.clone().into(),
            Cell::Json(v) => v.clone(),
        }
    }
}

fn full(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn parse_network(text: &str) -> Result<(IpAddr, u8), HistoryError> {
    let bad = || {
        HistoryError::Query(format!(
            "--destination {text:?}: expected an address or a network, e.g. 10.1.2.3 or 10.1.2.0/24"
        ))
    };
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix = prefix.unwrap_or(full(&ip));
    if prefix > full(&ip) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

fn same_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let cut = |ip| Destination::new(protocol::TransportProtocol::Tcp, ip, 0, prefix, prefix);
    ip.is_ipv4() == net.is_ipv4() && cut(ip).network == cut(net).network
}
