//! VirusTotal lookups against the local stand-in (tests/src/virustotal.rs) over real HTTP on
//! loopback: VirusTotal itself cannot be reached from these machines.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use intel::{Answer, ApiKey, Sha256, VerdictSource, VirusTotal, VirusTotalConfig};
use osprey_tests::virustotal::{EngineCounts, VirusTotalStandIn};
use tokio::sync::mpsc::Receiver;

const KEY: &str = "vt-test-key-6d1f0c93a7b24e58";

fn config(stand_in: &VirusTotalStandIn) -> VirusTotalConfig {
    VirusTotalConfig {
        api_key: Some(ApiKey::new(KEY)),
        base_url: stand_in.base_url(),
        // Only the quota test limits; elsewhere the public quota would slow tests down.
        per_minute: 1000,
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(800),
        timeout: Duration::from_secs(5),
        ..VirusTotalConfig::default()
    }
}

fn start(config: &VirusTotalConfig, dir: &Path) -> (VirusTotal<u32>, Receiver<Answer<u32>>) {
    VirusTotal::start(config, &dir.join("intel.db")).expect("start the lookups")
}

fn hash(name: &str) -> Sha256 {
    Sha256::digest(name.as_bytes())
}

/// Answers until `n` requesters have been answered or `within` passed.
fn answers(rx: &mut Receiver<Answer<u32>>, n: usize, within: Duration) -> Vec<Answer<u32>> {
    let deadline = Instant::now() + within;
    let mut out: Vec<Answer<u32>> = Vec::new();
    while out.iter().map(|a| a.requesters.len()).sum::<usize>() < n && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(answer) => out.push(answer),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    out
}

#[test]
fn a_known_file_gets_its_counts_and_link_and_an_unknown_one_is_unknown() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let bad = hash("bad");
    stand_in.know_file(&bad.to_string(), EngineCounts::malicious(5));
    let dir = tempfile::tempdir().unwrap();
    let (vt, mut rx) = start(&config(&stand_in), dir.path());

    vt.lookup(bad, None, 1).unwrap();
    vt.lookup(hash("new"), None, 2).unwrap();
    let got = answers(&mut rx, 2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "{got:?}");
    let known = got.iter().find(|a| a.requesters == [1]).unwrap();
    let v = &known.verdict;
    assert!(v.known);
    assert_eq!(
        (v.malicious, v.suspicious, v.undetected, v.engines),
        (5, 0, 65, 73)
    );
    assert_eq!(v.source, VerdictSource::Virustotal);
    assert_eq!(v.link, format!("https://www.virustotal.com/gui/file/{bad}"));
    assert_eq!(rules::IntelVerdict::from(v).detections, 5);
    let unknown = &got.iter().find(|a| a.requesters == [2]).unwrap().verdict;
    assert!(!unknown.known);
    assert_eq!(unknown.engines, 0);

    let gets = stand_in.requests("GET", "/api/v3/files/");
    assert_eq!(gets.len(), 2);
    assert!(gets.iter().all(|e| e.header("x-apikey") == Some(KEY)));
    assert_eq!(gets[0].path, format!("/api/v3/files/{bad}"));
}

#[test]
fn ten_unknown_hashes_go_four_per_window_and_none_is_lost() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(1500);
    let config = VirusTotalConfig {
        per_minute: 4,
        minute_window: window,
        ..config(&stand_in)
    };
    let (vt, mut rx) = start(&config, dir.path());
    let hashes: Vec<Sha256> = (0..10).map(|i| hash(&format!("unknown-{i}"))).collect();
    for (i, h) in hashes.iter().enumerate() {
        vt.lookup(*h, None, i as u32).unwrap();
    }

    let got = answers(&mut rx, 10, Duration::from_secs(30));
    let mut answered: Vec<u32> = got.iter().flat_map(|a| a.requesters.clone()).collect();
    answered.sort_unstable();
    assert_eq!(
        answered,
        (0..10).collect::<Vec<_>>(),
        "every request is answered once"
    );
    assert!(got.iter().all(|a| !a.verdict.known));
    for answer in &got {
        assert_eq!(answer.verdict.sha256, hashes[answer.requesters[0] as usize]);
    }

    let gets = stand_in.requests("GET", "/api/v3/files/");
    assert_eq!(gets.len(), 10, "one lookup per hash");
    let first = gets[0].at;
    let in_first_window = gets.iter().filter(|e| e.at < first + window).count();
    assert_eq!(in_first_window, 4);
    // No window of that length, anywhere, saw more than 4 requests.
    for pair in gets.windows(5) {
        let span = pair[4].at - pair[0].at;
        assert!(span >= window, "5 requests within {span:?}");
    }
    let stats = vt.stats();
    assert_eq!((stats.requested, stats.lookups, stats.pending), (10, 10, 0));
}

#[test]
fn a_429_backs_off_for_its_retry_after_and_5xx_back_off_exponentially() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let bad = hash("rate-limited");
    stand_in.know_file(&bad.to_string(), EngineCounts::malicious(5));
    stand_in.rate_limit_next(1, Some(1));
    let dir = tempfile::tempdir().unwrap();
    let (vt, mut rx) = start(&config(&stand_in), dir.path());

    vt.lookup(bad, None, 7).unwrap();
    let got = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].verdict.malicious, 5);
    let gets = stand_in.requests("GET", "/api/v3/files/");
    assert_eq!(
        gets.iter().map(|e| e.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = gets[1].at - gets[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert_eq!(vt.stats().rate_limited, 1);

    // Without Retry-After: 100 ms, then 200 ms, then 400 ms (retry_initial doubled).
    let other = hash("server-errors");
    stand_in.fail_next(3, 503);
    vt.lookup(other, None, 8).unwrap();
    let got = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert!(!got[0].verdict.known);
    let gets: Vec<_> = stand_in
        .requests("GET", "/api/v3/files/")
        .into_iter()
        .filter(|e| e.path.ends_with(&other.to_string()))
        .collect();
    assert_eq!(
        gets.iter().map(|e| e.status).collect::<Vec<_>>(),
        [503, 503, 503, 404]
    );
    for (i, pair) in gets.windows(2).enumerate() {
        let least = Duration::from_millis(100 << i);
        assert!(
            pair[1].at - pair[0].at >= least,
            "retry {i} came before {least:?}"
        );
    }
}

#[test]
fn with_the_stand_in_down_lookups_wait_and_resume_when_it_returns() {
    let mut stand_in = VirusTotalStandIn::start(KEY);
    let bad = hash("while-down");
    stand_in.know_file(&bad.to_string(), EngineCounts::malicious(9));
    stand_in.stop();
    let dir = tempfile::tempdir().unwrap();
    let (vt, mut rx) = start(&config(&stand_in), dir.path());

    vt.lookup(bad, None, 1).unwrap();
    vt.lookup(hash("also-while-down"), None, 2).unwrap();
    let early = answers(&mut rx, 1, Duration::from_secs(2));
    assert!(
        early.is_empty(),
        "nothing can be answered while it is down: {early:?}"
    );
    assert!(vt.stats().retries >= 2, "{:?}", vt.stats());
    assert_eq!(vt.stats().pending, 2);

    stand_in.run();
    let got = answers(&mut rx, 2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "both answered once it is back: {got:?}");
    let verdict = &got.iter().find(|a| a.requesters == [1]).unwrap().verdict;
    assert_eq!(verdict.malicious, 9);
    // Requests made after the outage still work (the client did not stay broken).
    vt.lookup(hash("after"), None, 3).unwrap();
    assert_eq!(answers(&mut rx, 1, Duration::from_secs(20)).len(), 1);
}

#[test]
fn ten_requests_for_one_hash_make_one_lookup_and_everyone_is_answered() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let h = hash("popular");
    stand_in.know_file(&h.to_string(), EngineCounts::malicious(2));
    // A slow first answer keeps the lookup pending while the other nine arrive.
    stand_in.rate_limit_next(1, Some(1));
    let dir = tempfile::tempdir().unwrap();
    let (vt, mut rx) = start(&config(&stand_in), dir.path());
    for requester in 0..10 {
        vt.lookup(h, None, requester).unwrap();
    }
    let got = answers(&mut rx, 10, Duration::from_secs(20));
    let mut answered: Vec<u32> = got.iter().flat_map(|a| a.requesters.clone()).collect();
    answered.sort_unstable();
    assert_eq!(answered, (0..10).collect::<Vec<_>>());
    assert!(got.iter().all(|a| a.verdict.malicious == 2));
    let ok = stand_in
        .requests("GET", "/api/v3/files/")
        .into_iter()
        .filter(|e| e.status == 200)
        .count();
    assert_eq!(ok, 1, "one lookup for ten requests");
    assert!(vt.stats().deduplicated + vt.stats().cache_hits >= 9);
}

#[test]
fn the_cache_answers_repeats_across_restarts_until_the_ttl_passes() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let known = hash("cached-known");
    let unknown = hash("cached-unknown");
    stand_in.know_file(&known.to_string(), EngineCounts::malicious(4));
    let dir = tempfile::tempdir().unwrap();
    let config = VirusTotalConfig {
        ttl_unknown: Duration::from_secs(2),
        ..config(&stand_in)
    };
    {
        let (vt, mut rx) = start(&config, dir.path());
        vt.lookup(known, None, 1).unwrap();
        vt.lookup(unknown, None, 2).unwrap();
        let got = answers(&mut rx, 2, Duration::from_secs(20));
        assert!(got
            .iter()
            .all(|a| a.verdict.source == VerdictSource::Virustotal));
    }
    // A new instance (a restarted collector) on the same database.
    let (vt, mut rx) = start(&config, dir.path());
    vt.lookup(known, None, 3).unwrap();
    vt.lookup(unknown, None, 4).unwrap();
    let got = answers(&mut rx, 2, Duration::from_secs(20));
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|a| a.verdict.source == VerdictSource::Cache),
        "{got:?}"
    );
    let cached = &got.iter().find(|a| a.requesters == [3]).unwrap().verdict;
    assert_eq!(cached.malicious, 4);
    assert_eq!(stand_in.requests("GET", "/api/v3/files/").len(), 2);
    assert_eq!(vt.stats().cache_hits, 2);

    // Once "unknown" is stale, VirusTotal is asked again; "known" is still fresh.
    std::thread::sleep(Duration::from_millis(2100));
    vt.lookup(known, None, 5).unwrap();
    vt.lookup(unknown, None, 6).unwrap();
    let got = answers(&mut rx, 2, Duration::from_secs(20));
    let source = |r: u32| {
        got.iter()
            .find(|a| a.requesters == [r])
            .unwrap()
            .verdict
            .source
    };
    assert_eq!(
        (source(5), source(6)),
        (VerdictSource::Cache, VerdictSource::Virustotal)
    );
    assert_eq!(stand_in.requests("GET", "/api/v3/files/").len(), 3);
}

#[test]
fn an_unknown_executable_is_uploaded_and_its_analysis_polled_until_completed() {
    let stand_in = VirusTotalStandIn::start(KEY);
    stand_in.analyses_complete_after(2, EngineCounts::malicious(7));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("dropper");
    let content = b"\x7fELF pretend executable for the upload test".to_vec();
    std::fs::write(&exe, &content).unwrap();
    let sha = Sha256::digest(&content);
    let mut config = config(&stand_in);
    config.upload.enabled = true;
    config.upload.poll_interval = Duration::from_millis(200);
    let (vt, mut rx) = start(&config, dir.path());

    vt.lookup(sha, Some(exe.clone()), 1).unwrap();
    let first = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(first.len(), 1);
    assert!(!first[0].verdict.known, "first the file is unknown");
    let second = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(second.len(), 1, "then the analysis' verdict comes");
    assert!(second[0].verdict.known);
    assert_eq!(second[0].verdict.malicious, 7);
    assert_eq!(second[0].requesters, [1]);

    let posts = stand_in.requests("POST", "/api/v3/files");
    assert_eq!(posts.len(), 1);
    assert!(posts[0]
        .header("content-type")
        .unwrap()
        .starts_with("multipart/form-data"));
    assert!(posts[0].body.windows(content.len()).any(|w| w == content));
    let polls = stand_in.requests("GET", "/api/v3/analyses/");
    assert_eq!(polls.len(), 3, "queued, queued, completed");
    assert!(polls
        .windows(2)
        .all(|p| p[1].at - p[0].at >= Duration::from_millis(200)));

    // The analysis' verdict was cached.
    vt.lookup(sha, None, 2).unwrap();
    let again = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(again[0].verdict.source, VerdictSource::Cache);
    assert_eq!(again[0].verdict.malicious, 7);
}

#[test]
fn excluded_oversized_changed_and_unasked_files_are_not_uploaded() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let dir = tempfile::tempdir().unwrap();
    let safe = dir.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    let write = |path: &Path, content: &[u8]| {
        std::fs::write(path, content).unwrap();
        Sha256::digest(content)
    };
    let excluded = safe.join("tool");
    let excluded_sha = write(&excluded, b"under a safe path");
    let big = dir.path().join("big");
    let big_sha = write(&big, &[7u8; 2048]);
    let changed = dir.path().join("changed");
    let changed_sha = write(&changed, b"before");
    write(&changed, b"after");
    let unasked = dir.path().join("unasked");
    let unasked_sha = write(&unasked, b"not uploaded without upload.enabled");

    let mut config = config(&stand_in);
    config.upload.enabled = true;
    config.upload.max_bytes = 1024;
    config.upload.exclude = vec![safe.clone()];
    let (vt, mut rx) = start(&config, dir.path());
    vt.lookup(excluded_sha, Some(excluded), 1).unwrap();
    vt.lookup(big_sha, Some(big), 2).unwrap();
    vt.lookup(changed_sha, Some(changed), 3).unwrap();
    assert_eq!(answers(&mut rx, 3, Duration::from_secs(20)).len(), 3);

    let mut off = config.clone();
    off.upload.enabled = false;
    let other = tempfile::tempdir().unwrap();
    let (vt_off, mut rx_off) = start(&off, other.path());
    vt_off.lookup(unasked_sha, Some(unasked), 4).unwrap();
    assert_eq!(answers(&mut rx_off, 1, Duration::from_secs(20)).len(), 1);

    // The HTTP thread skips the big and changed files after reading them: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    assert!(stand_in.requests("POST", "/api/v3/files").is_empty());
    assert_eq!(vt.stats().uploads, 0);
}

#[test]
fn a_wrong_key_is_retried_with_backoff_not_answered_as_unknown() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let dir = tempfile::tempdir().unwrap();
    let config = VirusTotalConfig {
        api_key: Some(ApiKey::new("not-the-key")),
        ..config(&stand_in)
    };
    let (vt, mut rx) = start(&config, dir.path());
    vt.lookup(hash("x"), None, 1).unwrap();
    let got = answers(&mut rx, 1, Duration::from_millis(1500));
    assert!(
        got.is_empty(),
        "a refused key says nothing about the file: {got:?}"
    );
    let statuses: Vec<u16> = stand_in.exchanges().iter().map(|e| e.status).collect();
    assert!(
        statuses.len() >= 2 && statuses.iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    assert_eq!(vt.stats().pending, 1);
}

#[test]
fn the_collector_can_use_exec_ids_as_requesters() {
    let stand_in = VirusTotalStandIn::start(KEY);
    let dir = tempfile::tempdir().unwrap();
    let (vt, mut rx) =
        VirusTotal::<protocol::ExecId>::start(&config(&stand_in), &dir.path().join("i.db"))
            .unwrap();
    let id: protocol::ExecId = "4cd11df2-4242-5242-1".parse().unwrap();
    vt.lookup(hash("exec"), None, id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Ok(a) = rx.try_recv() {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(answer.requesters, [id]);
}
