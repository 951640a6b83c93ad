//! Reading a feed's text: one IP/CIDR or SHA-256 per line (the first word; `#` and `;` start
//! comments, as in FireHOL `.netset` and Spamhaus DROP files), or a column of a CSV file.
//! Any line that is not what the feed should hold rejects the whole copy, naming the line.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Column, FeedConfig, FeedKind, Sha256};

/// The entries of one copy of a feed.
#[derive(Debug)]
pub(crate) enum Entries {
    Ip(Vec<IpNet>),
    Sha256(Vec<Sha256>),
}

impl Entries {
    pub fn len(&self) -> usize {
        match self {
            Entries::Ip(v) => v.len(),
            Entries::Sha256(v) => v.len(),
        }
    }
}

/// Why a copy was rejected: where, and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// 1-based; `None` for problems of the whole copy.
    pub line: Option<usize>,
    pub problem: String,
}

fn at(line: usize, problem: String) -> Rejected {
    Rejected {
        line: Some(line),
        problem,
    }
}

pub(crate) fn parse(text: &[u8], feed: &FeedConfig) -> Result<Entries, Rejected> {
    let entries = match (&feed.column, feed.kind) {
        (Some(column), _) => Entries::Sha256(csv_column(text, column)?),
        (None, FeedKind::Ip) => Entries::Ip(words(text, ip)?),
        (None, FeedKind::Sha256) => Entries::Sha256(words(text, |w| {
            w.parse::<Sha256>().map_err(|e| e.to_string())
        })?),
    };
    // An empty answer is far more often a truncated download or a file caught mid-write
    // than a list that emptied itself: keeping the previous copy is the safe side.
    if entries.len() == 0 {
        return Err(Rejected {
            line: None,
            problem: "holds no entries (an empty copy is refused; the previous one stays)".into(),
        });
    }
    Ok(entries)
}

/// The first word of every line that is not blank or a comment, parsed by `parse`.
fn words<T>(text: &[u8], parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, Rejected> {
    let mut out = Vec::new();
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let content = std::str::from_utf8(raw).map_err(|_| at(line, "is not UTF-8 text".into()))?;
        let content = content
            .split(['#', ';'])
            .next()
            .unwrap_or_default()
            .trim_start_matches('\u{feff}');
        let Some(word) = content.split_whitespace().next() else {
            continue;
        };
        out.push(parse(word).map_err(|problem| at(line, problem))?);
    }
    Ok(out)
}

/// An address (a /32 or /128) or a CIDR; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
/// Host bits set below the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as iptables
/// and ipset read them.
fn ip(word: &str) -> Result<IpNet, String> {
    let shown: String = word.chars().take(80).collect();
    if let Ok(addr) = word.parse::<IpAddr>() {
        return Ok(IpNet::from(addr.to_canonical()));
    }
    let net = word
        .parse::<IpNet>()
        .map_err(|_| format!("{shown:?} is not an IP address or CIDR"))?
        .trunc();
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                .map_err(|e| format!("{shown:?}: {e}"))?,
            None => net,
        },
        _ => net,
    })
}

/// The hashes in one column of a CSV file. Lines starting with `#` are comments; a named
/// column is found in the first row, or in the last comment line before the data (abuse.ch
/// exports put the header there: `# "first_seen_utc","sha256_hash",...`).
fn csv_column(text: &[u8], column: &Column) -> Result<Vec<Sha256>, Rejected> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text);
    let mut records = reader.records().peekable();
    let index = match column {
        Column::Number(n) => n - 1,
        Column::Name(name) => {
            let in_first_row = match records.peek() {
                Some(Ok(first)) => position(first, name),
                _ => None,
            };
            match in_first_row {
                Some(i) => {
                    records.next();
                    i
                }
                None => header_in_comment(text, name).ok_or_else(|| Rejected {
                    line: None,
                    problem: format!("no column named {name:?} in the header"),
                })?,
            }
        }
    };
    let mut out = Vec::new();
    for record in records {
        let record = record.map_err(|e| Rejected {
            line: e.position().map(|p| p.line() as usize),
            problem: format!("not CSV: {e}"),
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let field = record.get(index).ok_or_else(|| {
            at(
                line,
                format!("has {} columns, no column {}", record.len(), index + 1),
            )
        })?;
        out.push(
            unquote(field)
                .parse()
                .map_err(|e: crate::NotASha256| at(line, e.to_string()))?,
        );
    }
    Ok(out)
}

fn position(record: &csv::StringRecord, name: &str) -> Option<usize> {
    record
        .iter()
        .position(|f| unquote(f).eq_ignore_ascii_case(name))
}

/// abuse.ch writes `"a", "b"`: after the comma's space the quote is no longer the field's
/// first character, so the CSV reader keeps it.
fn unquote(field: &str) -> &str {
    field.trim().trim_matches('"')
}

/// The column `name` in the last comment line before the first data line.
fn header_in_comment(text: &[u8], name: &str) -> Option<usize> {
    let mut last_comment = None;
    for raw in text.split(|b| *b == b'\n') {
        let line = std::str::from_utf8(raw).ok()?.trim();
        match line.strip_prefix('#') {
            Some(comment) => last_comment = Some(comment.trim()),
            None if line.is_empty() => {}
            None => break,
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(last_comment?.as_bytes());
    let header = reader.records().next()?.ok()?;
    position(&header, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(kind: FeedKind, column: Option<Column>) -> FeedConfig {
        FeedConfig {
            name: "t".into(),
            path: Some("/dev/null".into()),
            url: None,
            kind,
            column,
            refresh: None,
        }
    }

    fn nets(text: &str) -> Vec<String> {
        match parse(text.as_bytes(), &feed(FeedKind::Ip, None)).unwrap() {
            Entries::Ip(v) => v.iter().map(|n| n.to_string()).collect(),
            Entries::Sha256(_) => unreachable!(),
        }
    }

    #[test]
    fn netset_lines_comments_and_mapped_addresses() {
        let text = "#\n# firehol_level1\n#\n1.2.3.0/24\n5.6.7.8\n\n  2001:db8::/32  \n\
                    ::ffff:9.9.9.9\n::ffff:10.0.0.0/104\n10.1.2.3/8 ; SBL123\n";
        assert_eq!(
            nets(text),
            [
                "1.2.3.0/24",
                "5.6.7.8/32",
                "2001:db8::/32",
                "9.9.9.9/32",
                "10.0.0.0/8",
                "10.0.0.0/8"
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse(b"1.2.3.4\n<html>\n", &feed(FeedKind::Ip, None)).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.problem, "\"<html>\" is not an IP address or CIDR");
        let err = parse(b"# nothing\n\n", &feed(FeedKind::Ip, None)).unwrap_err();
        assert_eq!(err.line, None);
        assert!(err.problem.contains("no entries"), "{}", err.problem);
        let err = parse(b"abc\n", &feed(FeedKind::Sha256, None)).unwrap_err();
        assert!(err.problem.contains("not a SHA-256"), "{}", err.problem);
    }

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const B: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn hashes(text: &str, column: Column) -> Result<Vec<String>, Rejected> {
        match parse(text.as_bytes(), &feed(FeedKind::Sha256, Some(column)))? {
            Entries::Sha256(v) => Ok(v.iter().map(|h| h.to_string()).collect()),
            Entries::Ip(_) => unreachable!(),
        }
    }

    #[test]
    fn csv_columns_by_number_by_header_and_by_commented_header() {
        let plain = format!("first_seen,sha256_hash,name\n2024-01-01,{A},x\n2024-01-02,{B},y\n");
        assert_eq!(
            hashes(&plain, Column::Name("sha256_hash".into())).unwrap(),
            [A, B]
        );
        let numbered = format!("2024-01-01,{A},x\n");
        assert_eq!(hashes(&numbered, Column::Number(2)).unwrap(), [A]);
        let bazaar = format!(
            "####\n# MalwareBazaar dump\n#\n# \"first_seen_utc\", \"sha256_hash\", \"md5_hash\"\n\
             \"2024-01-01 00:00:00\", \"{A}\", \"d41d8cd98f00b204e9800998ecf8427e\"\n\
             # a comment between rows\n\"2024-01-02 00:00:00\", \"{}\", \"x\"\n",
            B.to_uppercase()
        );
        assert_eq!(
            hashes(&bazaar, Column::Name("sha256_hash".into())).unwrap(),
            [A, B]
        );

        let err = hashes(&plain, Column::Name("sha1".into())).unwrap_err();
        assert_eq!(err.problem, "no column named \"sha1\" in the header");
        let err = hashes(&format!("a,{A}\nb,zz\n"), Column::Number(2)).unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = hashes(&format!("a,{A}\nb\n"), Column::Number(2)).unwrap_err();
        assert_eq!(
            (err.line, err.problem.as_str()),
            (Some(2), "has 1 columns, no column 2")
        );
    }
}
