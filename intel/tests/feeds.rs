//! Offline feeds from files and from a URL served on loopback: matching, reloading, and
//! keeping the previous copy when a new one is broken or cannot be had.

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use intel::{Column, FeedConfig, FeedHit, FeedKind, Feeds, Sha256};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn file_feed(name: &str, path: &Path, kind: FeedKind) -> FeedConfig {
    FeedConfig {
        name: name.into(),
        path: Some(path.to_path_buf()),
        url: None,
        kind,
        column: None,
        refresh: Some(Duration::from_millis(100)),
    }
}

/// Replaces `path` the way a feed updater does: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn until<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_address_in_a_feed_file_matches_and_a_broken_replacement_keeps_the_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocklist.netset");
    replace(
        &path,
        "#\n# test blocklist (FireHOL style)\n#\n203.0.113.0/24\n198.18.0.7\n2001:db8:bad::/48\n",
    );
    let feeds = Feeds::start(
        &[file_feed("test-blocklist", &path, FeedKind::Ip)],
        dir.path(),
    )
    .unwrap();

    let hit = FeedHit {
        feed: "test-blocklist".into(),
        entry: "203.0.113.0/24".into(),
        kind: FeedKind::Ip,
    };
    assert_eq!(
        feeds.match_ip(ip("203.0.113.9")),
        std::slice::from_ref(&hit)
    );
    assert_eq!(
        feeds.match_ip(ip("::ffff:203.0.113.9")),
        std::slice::from_ref(&hit),
        "IPv4-mapped"
    );
    assert_eq!(feeds.match_ip(ip("198.18.0.7"))[0].entry, "198.18.0.7/32");
    assert_eq!(
        feeds.match_ip(ip("2001:db8:bad::1"))[0].entry,
        "2001:db8:bad::/48"
    );
    assert!(feeds.match_ip(ip("198.18.0.8")).is_empty());
    assert_eq!(feeds.status()[0].entries, 3);

    // A broken copy: the error names the file, the line and what is wrong; the old copy stays.
    replace(&path, "198.51.100.1\nnot-an-address\n");
    let error = until(Duration::from_secs(10), || feeds.status()[0].error.clone())
        .expect("the broken file is reported");
    assert_eq!(
        error,
        format!(
            "feed test-blocklist: {}:2: \"not-an-address\" is not an IP address or CIDR",
            path.display()
        )
    );
    assert_eq!(feeds.match_ip(ip("203.0.113.9")), [hit]);
    assert!(feeds.match_ip(ip("198.51.100.1")).is_empty());
    assert_eq!(feeds.status()[0].entries, 3);

    // An empty copy (a truncated write) is refused the same way.
    replace(&path, "# nothing left\n");
    let error = until(Duration::from_secs(10), || {
        feeds.status()[0]
            .error
            .clone()
            .filter(|e| e.contains("no entries"))
    });
    assert!(error.is_some(), "{:?}", feeds.status());
    assert_eq!(feeds.match_ip(ip("203.0.113.9")).len(), 1);

    // A good copy replaces it and clears the error.
    replace(&path, "198.51.100.0/24\n");
    assert!(until(Duration::from_secs(10), || (!feeds
        .match_ip(ip("198.51.100.1"))
        .is_empty())
    .then_some(()))
    .is_some());
    assert!(feeds.match_ip(ip("203.0.113.9")).is_empty());
    assert_eq!(feeds.status()[0].error, None);
}

#[test]
fn a_missing_file_at_start_is_reported_and_loaded_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.txt");
    let feeds = Feeds::start(&[file_feed("later", &path, FeedKind::Ip)], dir.path()).unwrap();
    let status = &feeds.status()[0];
    assert!(
        status
            .error
            .as_deref()
            .unwrap()
            .starts_with(&format!("feed later: cannot read {}:", path.display())),
        "{status:?}"
    );
    replace(&path, "192.0.2.1\n");
    assert!(until(Duration::from_secs(10), || (!feeds
        .match_ip(ip("192.0.2.1"))
        .is_empty())
    .then_some(()))
    .is_some());
}

const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const B: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn hash_lists_one_per_line_and_from_a_csv_column() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("hashes.txt");
    replace(&list, &format!("# bad binaries\n{A}  /tmp/dropper\n"));
    let csv = dir.path().join("bazaar.csv");
    replace(
        &csv,
        &format!(
            "# \"first_seen_utc\", \"sha256_hash\", \"md5_hash\"\n\"2024-01-01\", \"{B}\", \"x\"\n"
        ),
    );
    let feeds = Feeds::start(
        &[
            file_feed("local-hashes", &list, FeedKind::Sha256),
            FeedConfig {
                column: Some(Column::Name("sha256_hash".into())),
                ..file_feed("bazaar", &csv, FeedKind::Sha256)
            },
        ],
        dir.path(),
    )
    .unwrap();
    let a: Sha256 = A.parse().unwrap();
    let b: Sha256 = B.parse().unwrap();
    assert_eq!(
        feeds.match_sha256(&a),
        [FeedHit {
            feed: "local-hashes".into(),
            entry: A.into(),
            kind: FeedKind::Sha256
        }]
    );
    assert_eq!(feeds.match_sha256(&b)[0].feed, "bazaar");
    assert!(feeds.match_sha256(&Sha256::digest(b"other")).is_empty());
}

/// A loopback HTTP server answering every request with the current status and body.
struct FeedServer {
    port: u16,
    answer: Arc<Mutex<(u16, String)>>,
    stop: Arc<AtomicBool>,
}

impl FeedServer {
    fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((200, body.to_string())));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&answer), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut buf);
                let (status, body) = a.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FeedServer { port, answer, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/feeds/bad-ips.txt", self.port)
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_url_feed_is_downloaded_saved_refreshed_and_kept_when_the_server_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start("# remote list\n192.0.2.0/24\n");
    let config = FeedConfig {
        name: "remote".into(),
        path: None,
        url: Some(server.url()),
        kind: FeedKind::Ip,
        column: None,
        refresh: Some(Duration::from_millis(200)),
    };
    let feeds_dir = dir.path().join("feeds");
    let feeds = Feeds::start(std::slice::from_ref(&config), &feeds_dir).unwrap();
    assert!(until(Duration::from_secs(10), || (!feeds
        .match_ip(ip("192.0.2.5"))
        .is_empty())
    .then_some(()))
    .is_some());
    let saved = feeds_dir.join("remote.ip");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "# remote list\n192.0.2.0/24\n"
    );

    // An error page instead of the list: refused, naming the URL and line.
    server.answer(200, "<html><body>Service unavailable</body></html>\n");
    let error = until(Duration::from_secs(10), || feeds.status()[0].error.clone()).unwrap();
    assert_eq!(
        error,
        format!(
            "feed remote: {}:1: \"<html><body>Service\" is not an IP address or CIDR",
            server.url()
        )
    );
    assert!(!feeds.match_ip(ip("192.0.2.5")).is_empty());
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "# remote list\n192.0.2.0/24\n"
    );

    // An HTTP error, then the server gone: still the old copy, and why.
    server.answer(503, "busy");
    let error = until(Duration::from_secs(10), || {
        feeds.status()[0]
            .error
            .clone()
            .filter(|e| e.contains("cannot download"))
    })
    .unwrap();
    assert!(error.contains("503"), "{error}");
    server.stop();
    assert!(!feeds.match_ip(ip("192.0.2.5")).is_empty());
    drop(feeds);

    // A restart without the server starts from the saved copy.
    let restarted = Feeds::start(&[config], &feeds_dir).unwrap();
    assert!(!restarted.match_ip(ip("192.0.2.5")).is_empty());
    assert_eq!(restarted.status()[0].entries, 1);
}

#[test]
fn reload_rereads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list");
    replace(&path, "192.0.2.1\n");
    let config = FeedConfig {
        refresh: Some(Duration::from_secs(3600)),
        ..file_feed("slow", &path, FeedKind::Ip)
    };
    let feeds = Feeds::start(&[config], dir.path()).unwrap();
    replace(&path, "192.0.2.2\n");
    thread::sleep(Duration::from_millis(300));
    assert!(
        feeds.match_ip(ip("192.0.2.2")).is_empty(),
        "not before its refresh"
    );
    feeds.reload();
    assert!(until(Duration::from_secs(10), || (!feeds
        .match_ip(ip("192.0.2.2"))
        .is_empty())
    .then_some(()))
    .is_some());
}
