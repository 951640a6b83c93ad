//! Threat intelligence and local response on one host, end to end: the real collector with
//! `response.mode: local` and no NATS at all, real processes, and a local VirusTotal stand-in
//! (VirusTotal itself cannot be reached from these machines).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use osprey_tests::{
    actuation::{audit_lines, wait_audit},
    cgroup::TestCgroup,
    collector::Collector,
    eventually, marker,
    virustotal::{EngineCounts, VirusTotalStandIn},
    workload,
};
use protocol::{Decision, Detector};
use sha2::{Digest, Sha256};

/// The example policy in deploy/: a process named virus → kill + quarantine; more than 3
/// engines → suspend + dump + quarantine; resident memory above 500 MB → log.
fn deploy_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.yaml")
}

struct Host {
    dir: tempfile::TempDir,
    cgroup: TestCgroup,
}

impl Host {
    fn new(tag: &str) -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
            cgroup: TestCgroup::create(tag),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn audit(&self) -> PathBuf {
        self.path("audit.jsonl")
    }

    /// A policy with no rules of its own (the heuristics and intel still run).
    fn no_policy(&self) -> PathBuf {
        let path = self.path("empty-policy.yaml");
        std::fs::write(&path, "version: 1\nrules: []\n").unwrap();
        path
    }

    /// A collector acting on its own findings with `policy`, plus `extra` YAML.
    async fn collector(&self, policy: &Path, extra: &str) -> Collector {
        Collector::start_offline(&self.config(policy, extra), &[]).await
    }

    /// The configuration of a collector acting on its own findings with `policy`.
    fn config(&self, policy: &Path, extra: &str) -> PathBuf {
        let config = self.path("collector.yaml");
        let text = format!(
            "sensor:\n  cgroup_root: {cg}\npolicy: {policy}\nresponse:\n  mode: local\n\
             memory_sample_interval_secs: 1\n\
             actuator:\n  state_dir: {d}/state\n  audit_file: {audit}\n  quarantine_dir: {d}/quarantine\n  dump_dir: {d}/dumps\n{extra}",
            cg = self.cgroup.path.display(),
            policy = policy.display(),
            d = self.dir.path().display(),
            audit = self.audit().display(),
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    /// A program of its own (its hash is unique to this run) compiled as `name`, that
    /// sleeps.
    fn sleeper(&self, name: &str) -> PathBuf {
        let source = format!(
            "#include <unistd.h>\nstatic const char *mark = \"{}\";\nint main(void){{ (void)mark; sleep(600); return 0; }}\n",
            marker(name)
        );
        workload::compile_c(self.dir.path(), name, &source)
    }

    fn spawn(&self, program: &Path) -> std::process::Child {
        self.cgroup
            .enter(Command::new(program).stdout(Stdio::null()))
            .spawn()
            .unwrap()
    }
}

fn sha256_of(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn alive(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

const KEY_ENV: &str = "OSPREY_TEST_VT_KEY";

fn virustotal_yaml(stand_in: &VirusTotalStandIn, host: &Host, extra: &str) -> String {
    format!(
        "intel:\n  cache: {cache}\n  virustotal:\n    api_key_env: {KEY_ENV}\n    base_url: {url}\n    retry_initial: 200ms\n{extra}",
        cache = host.path("intel.db").display(),
        url = stand_in.base_url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_virustotal_flags_is_suspended_dumped_and_quarantined_without_nats() {
    let key = format!("vt-key-{}", marker("k"));
    std::env::set_var(KEY_ENV, &key);
    let host = Host::new("vt");
    let stand_in = VirusTotalStandIn::start(&key);
    let bad = host.sleeper("flagged");
    let sha = sha256_of(&bad);
    stand_in.know_file(
        &sha,
        EngineCounts {
            malicious: 5,
            suspicious: 1,
            harmless: 2,
            undetected: 60,
        },
    );
    let collector = host
        .collector(&deploy_policy(), &virustotal_yaml(&stand_in, &host, ""))
        .await;
    let mut child = host.spawn(&bad);
    let pid = child.id();

    let finding = collector
        .wait_finding("the VirusTotal finding", |f| {
            f.process.pid == pid && f.detector == Detector::Intel
        })
        .await;
    assert!(
        finding.title.contains("flagged by 6 of")
            && finding.title.contains("5 malicious, 1 suspicious"),
        "{}",
        finding.title
    );
    assert!(
        finding
            .description
            .as_deref()
            .is_some_and(|d| d.contains(&format!("virustotal.com/gui/file/{sha}"))),
        "the report link: {:?}",
        finding.description
    );
    // The policy's rule on `intel.detections_above: 3` acts: suspend, dump, quarantine.
    let quarantined = wait_audit(&host.audit(), "the quarantine", |a| {
        a.action == "quarantine" && a.pid == Some(pid)
    })
    .await;
    let records: Vec<_> = audit_lines(&host.audit())
        .into_iter()
        .filter(|a| a.pid == Some(pid))
        .collect();
    let actions: Vec<&str> = records.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["suspend", "dump", "quarantine"], "{records:#?}");
    assert!(
        records.iter().all(|a| a.decision == Decision::Executed),
        "{records:#?}"
    );
    assert!(records
        .iter()
        .all(|a| a.actor.name.as_deref() == Some("local response")));
    let dump = records[1]
        .dump_path
        .as_deref()
        .expect("the dump's directory");
    assert!(Path::new(dump).join("maps").exists());
    let moved = quarantined.quarantine_path.expect("where the file went");
    assert_eq!(sha256_of(Path::new(&moved)), sha);
    assert!(!bad.exists(), "moved away");
    let mode = std::fs::metadata(&moved).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0,
        "no longer executable"
    );
    assert!(alive(&mut child), "suspended, not killed");
    let _ = child.kill();
    let _ = child.wait();

    // The key: in the request header only, never in a log line, a finding, an audit record
    // or the collector's command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", collector.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&key));
    assert!(
        collector.log_lines(&key).is_empty(),
        "the key is in the log"
    );
    assert!(!std::fs::read_to_string(host.audit())
        .unwrap()
        .contains(&key));
    for f in collector.findings(|_| true) {
        assert!(!serde_json::to_string(&f).unwrap().contains(&key));
    }
    let asked = stand_in.requests("GET", "/api/v3/files/");
    assert!(!asked.is_empty());
    assert!(asked
        .iter()
        .all(|e| e.header("x-apikey") == Some(key.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_the_policy_names_is_killed_and_its_executable_quarantined() {
    let host = Host::new("name");
    let collector = host.collector(&deploy_policy(), "").await;
    let virus = host.sleeper("virus");
    let mut child = host.spawn(&virus);
    let pid = child.id();
    let killed = wait_audit(&host.audit(), "the kill", |a| {
        a.action == "kill" && a.pid == Some(pid)
    })
    .await;
    assert_eq!(killed.decision, Decision::Executed, "{killed:?}");
    let quarantined = audit_lines(&host.audit())
        .into_iter()
        .find(|a| a.action == "quarantine" && a.pid == Some(pid))
        .expect("quarantined before the kill");
    assert_eq!(quarantined.decision, Decision::Executed, "{quarantined:?}");
    assert!(quarantined.quarantine_path.is_some());
    assert!(!virus.exists());
    let status = eventually(Duration::from_secs(5), || child.try_wait().ok().flatten()).await;
    assert!(status.is_some(), "killed");
    assert!(!collector
        .findings(|f| f.process.pid == pid && f.rule_id == "osprey-policy-virus-name")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_above_the_threshold_is_one_warning_and_no_action() {
    let host = Host::new("rss");
    let policy = host.path("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\nrules:\n  - id: big-rss\n    title: Resident memory above 40 MB\n    severity: low\n    actions: [log]\n    match:\n      rss_above_mb: 40\n",
    )
    .unwrap();
    let collector = host.collector(&policy, "").await;
    let mark = marker("rss");
    let mut child = host
        .cgroup
        .enter(Command::new(workload::PYTHON).args([
            "-c",
            &format!("# {mark}\nimport time\nb = bytearray(b'x') * (64 << 20)\ntime.sleep(600)\n"),
        ]))
        .spawn()
        .unwrap();
    let pid = child.id();
    let warned = wait_audit(&host.audit(), "the warning", |a| {
        a.action == "log" && a.pid == Some(pid)
    })
    .await;
    assert_eq!(warned.decision, Decision::Executed);
    assert!(warned.reason.contains("big-rss"), "{}", warned.reason);
    // Later samples are the same finding: no second warning, and no action at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let about_it: Vec<_> = audit_lines(&host.audit())
        .into_iter()
        .filter(|a| a.pid == Some(pid))
        .collect();
    assert_eq!(about_it.len(), 1, "{about_it:#?}");
    assert!(alive(&mut child));
    let _ = child.kill();
    let _ = child.wait();
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_destination_raises_a_finding_naming_its_feed_even_after_a_broken_update() {
    let host = Host::new("feed");
    let listener = TcpListener::bind("127.0.0.9:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let feed = host.path("blocklist.netset");
    std::fs::write(&feed, "# test feed\n127.0.0.9\n203.0.113.0/24\n").unwrap();
    let extra = format!(
        "intel:\n  cache: {}\n  feeds:\n    - name: test-blocklist\n      kind: ip\n      path: {}\n      refresh: 200ms\n",
        host.path("intel.db").display(),
        feed.display()
    );
    let collector = host.collector(&host.no_policy(), &extra).await;
    let connect = |tag: &str| {
        let mark = marker(tag);
        let status = host
            .cgroup
            .enter(Command::new(workload::PYTHON).args([
                "-c",
                &format!("# {mark}\nimport socket\nsocket.create_connection(('127.0.0.9', {port})).close()\n"),
            ]))
            .status()
            .unwrap();
        assert!(status.success());
        mark
    };
    let first = connect("feed1");
    let f = collector
        .wait_finding("the feed finding", |f| {
            f.rule_id == "osprey.intel.feed-destination"
                && f.process.argv.iter().any(|a| a.contains(&first))
        })
        .await;
    assert!(f.title.contains("test-blocklist"), "{}", f.title);

    std::fs::write(&feed, "127.0.0.9\nnot-an-address\n").unwrap();
    let logged = eventually(Duration::from_secs(10), || {
        collector
            .log_lines("not-an-address")
            .into_iter()
            .find(|l| l.contains("test-blocklist"))
    })
    .await;
    assert!(logged.is_some(), "the broken feed is reported");
    let second = connect("feed2");
    collector
        .wait_finding("a finding from the old copy", |f| {
            f.rule_id == "osprey.intel.feed-destination"
                && f.process.argv.iter().any(|a| a.contains(&second))
        })
        .await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_keep_to_the_rate_limit_and_survive_the_service_going_away() {
    let key = format!("vt-key-{}", marker("k"));
    std::env::set_var(KEY_ENV, &key);
    let host = Host::new("rate");
    let mut stand_in = VirusTotalStandIn::start(&key);
    stand_in.rate_limit_next(1, Some(1));
    let window = "    per_minute: 4\n    minute_window: 3s\n";
    let collector = host
        .collector(
            &host.no_policy(),
            &virustotal_yaml(&stand_in, &host, window),
        )
        .await;
    let programs: Vec<PathBuf> = (0..10).map(|i| host.sleeper(&format!("p{i}"))).collect();
    let mut children: Vec<_> = programs.iter().map(|p| host.spawn(p)).collect();
    let hashes: Vec<String> = programs.iter().map(|p| sha256_of(p)).collect();
    let asked = |stand_in: &VirusTotalStandIn| {
        let mut seen: Vec<String> = stand_in
            .requests("GET", "/api/v3/files/")
            .into_iter()
            .map(|e| e.path.rsplit('/').next().unwrap_or("").to_string())
            .filter(|h| hashes.contains(h))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    let all = eventually(Duration::from_secs(60), || {
        (asked(&stand_in).len() == hashes.len()).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "every hash looked up: {:?}",
        asked(&stand_in)
    );
    let times: Vec<_> = stand_in
        .requests("GET", "/api/v3/files/")
        .into_iter()
        .map(|e| e.at)
        .collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|u| u.duration_since(*t) < Duration::from_secs(3))
            .count();
        assert!(in_window <= 4, "more than 4 requests in one 3 s window");
    }

    // VirusTotal away: events go on; lookups wait and resume when it is back.
    stand_in.stop();
    let late = host.sleeper("late");
    let mut late_child = host.spawn(&late);
    collector
        .wait_event("an exec while VirusTotal is down", |e| {
            e.process.pid == late_child.id()
        })
        .await;
    stand_in.run();
    let late_sha = sha256_of(&late);
    let resumed = eventually(Duration::from_secs(60), || {
        stand_in
            .requests("GET", &format!("/api/v3/files/{late_sha}"))
            .first()
            .cloned()
    })
    .await;
    assert!(resumed.is_some(), "the lookup resumed");
    for c in children.iter_mut().chain(std::iter::once(&mut late_child)) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `osprey scan` on this machine, with `args`: its exit status, stdout lines and stderr.
fn scan(config: &Path, args: &[&str]) -> (std::process::ExitStatus, Vec<String>, String) {
    let bin = osprey_tests::bin_dir();
    let out = Command::new(bin.join("osprey"))
        .arg("scan")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("OSPREY_COLLECTOR", bin.join("osprey-collector"))
        .output()
        .expect("osprey scan runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process the policy names, started before any collector (so only the scan's own look at
/// running processes can judge it): `osprey scan --limit 5` lists it first and does nothing;
/// `--apply` kills it and quarantines its executable, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prints_a_table_and_apply_acts_on_what_the_policy_names() {
    let host = Host::new("scan");
    let virus = host.sleeper("virus");
    let mut child = host.spawn(&virus);
    let pid = child.id();
    let config = host.config(&deploy_policy(), "");

    let (status, lines, stderr) = scan(&config, &["--limit", "5"]);
    assert!(status.success(), "osprey scan failed: {stderr}");
    assert!(lines[0].starts_with("RISK"), "a table: {lines:#?}");
    assert!(
        (2..=6).contains(&lines.len()),
        "a header and at most 5 rows: {lines:#?}"
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (first[0], first[1]),
        ("CRITICAL", pid.to_string().as_str()),
        "the named process is the riskiest: {lines:#?}"
    );
    assert!(lines[1].contains(&sha256_of(&virus)[..12]), "{lines:#?}");
    assert!(alive(&mut child), "without --apply nothing is done");
    let dry = audit_lines(&host.audit())
        .into_iter()
        .find(|a| a.action == "kill" && a.pid == Some(pid))
        .expect("the kill is decided and audited");
    assert_eq!(dry.decision, Decision::DryRun, "{dry:?}");

    let (status, _, stderr) = scan(&config, &["--apply", "--limit", "5"]);
    assert!(status.success(), "osprey scan --apply failed: {stderr}");
    let status = eventually(Duration::from_secs(5), || child.try_wait().ok().flatten()).await;
    assert!(status.is_some(), "--apply killed it");
    let executed = |action: &str| {
        audit_lines(&host.audit())
            .into_iter()
            .any(|a| a.action == action && a.pid == Some(pid) && a.decision == Decision::Executed)
    };
    assert!(
        executed("kill") && executed("quarantine"),
        "{:#?}",
        audit_lines(&host.audit())
    );
    assert!(!virus.exists(), "quarantined");
}
