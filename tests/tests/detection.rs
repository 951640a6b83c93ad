//! The detection engine through the live sensor: Sigma rules of the shared corpus fired by
//! harmless commands, a benign workload under the whole corpus and the example policy, hot
//! reload of the policy file, and the resident-memory rule.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use osprey_tests::{
    collector::{is_exec_with, Collector},
    eventually, marker,
    nats::NatsServer,
    workload::{self, python},
};
use protocol::{Detector, EventDetail, Finding, Severity};

/// The shared Linux Sigma corpus beside the workspace (or `OSPREY_SIGMA_DIR`).
fn sigma_corpus() -> PathBuf {
    let dir = std::env::var_os("OSPREY_SIGMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sigma/rules/linux")
        });
    dir.canonicalize()
        .unwrap_or_else(|_| panic!("the shared Sigma corpus at {}", dir.display()))
}

fn example_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policy.yaml")
        .canonicalize()
        .unwrap()
}

/// Fields drop in order: the collector stops before its NATS server and directories go.
struct Setup {
    collector: Collector,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let client = nats.client().await;
    let collector =
        Collector::start_logged(&client, &nats.url(), &dir.path().join("spool"), extra).await;
    Setup {
        collector,
        _nats: nats,
        _dir: dir,
    }
}

/// How many Sigma rules the collector said evaluate when it loaded its rules.
fn sigma_rules_loaded(c: &Collector) -> usize {
    let line = c
        .log_lines("rules loaded:")
        .pop()
        .expect("the collector logs what it loaded");
    // "... N evaluate (S Sigma, P policy) ..."
    let sigma = line
        .split(" evaluate (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    sigma.unwrap_or_else(|| panic!("no Sigma count in {line:?}"))
}

/// Title, level and author of every rule of the corpus, by id (each on one line in the files).
fn corpus_rules(dir: &Path) -> BTreeMap<String, (String, String, String)> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, (String, String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let key = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
                    .unwrap_or_default()
            };
            out.insert(
                key("id: "),
                (key("title: "), key("level: "), key("author: ")),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn severity_of_level(level: &str) -> Severity {
    match level {
        "informational" => Severity::Info,
        "low" => Severity::Low,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => Severity::Medium,
    }
}

/// Whether a finding is about this test process's descendants.
fn from_this_test(f: &Finding) -> bool {
    let me = std::process::id();
    f.process.ppid == me || f.ancestry.iter().any(|a| a.pid == me)
}

/// A PATH without the per-user shims (pyenv) some machines put first: the commands below are
/// the distribution's.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn sh(dir: &Path, script: &str) -> std::process::ExitStatus {
    Command::new("/bin/sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("/bin/sh runs")
}

/// Must-show 2: harmless commands of `rules/tests/data/harmless_triggers.yaml`, run for real
/// (files only in a temporary directory, connections only to loopback), fire at least 20
/// distinct rules of the shared corpus through the live sensor, each finding carrying the
/// rule's id, title, level (as severity) and author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harmless_commands_fire_at_least_20_sigma_rules_of_the_shared_corpus() {
    let corpus = sigma_corpus();
    let s = setup(&["--sigma", corpus.to_str().unwrap()]).await;
    let c = &s.collector;
    assert!(
        sigma_rules_loaded(c) >= 120,
        "{:?}",
        c.log_lines("rules loaded:")
    );

    let dir = tempfile::tempdir().unwrap(); // under /tmp, as the rules' paths expect
    let t = dir.path().to_str().unwrap().to_string();
    std::fs::write(dir.path().join(".bash_history"), "ls\n").unwrap();
    let shm = format!("/dev/shm/{}", marker("shm"));
    // bash connecting anywhere but 127.0.0.1 / 0.0.0.0 is the rule; 127.0.0.2 is loopback too.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // (command, rules of the corpus it fires: rules/tests/data/harmless_triggers.yaml). Paths
    // under /tmp are in this test's own directory.
    let commands: Vec<(String, &[&str])> = vec![
        (
            "echo whoami | bash -i".into(),
            &["ea3ecad2-db86-4a89-ad0b-132a10d2db55"],
        ),
        ("id".into(), &["b45e3d6f-42c6-47d8-a478-df6bd6cf534c"]),
        ("uname -a".into(), &["42df45e7-e6e9-43b5-8f26-bec5b39cc239"]),
        (
            "cat /etc/group".into(),
            &["676381a6-15ca-4d73-a9c8-6a22e970b90d"],
        ),
        (
            "echo aGkK | base64 -d".into(),
            &["e2072cab-8c9a-459b-b63c-40ae79e27031"],
        ),
        (
            format!("touch {t}/x; chmod +x {t}/x"),
            &["6419afd1-3742-47a5-a7e6-b50386cd15f8"],
        ),
        ("who".into(), &["4c519226-f0cd-4471-bd2f-6fbb2bb68a79"]),
        (
            "cat /etc/resolv.conf".into(),
            &["e7bd1cfa-b446-4c88-8afb-403bcd79e3fa"],
        ),
        (
            format!("find {t} -maxdepth 1"),
            &["d3feb4ee-ff1d-4d3d-bd10-5b28a238cc72"],
        ),
        (
            format!("rm -f {t}/x"),
            &["30aed7b6-d2c1-4eaf-9382-b6bc43e50c57"],
        ),
        (
            "curl --version".into(),
            &["ea34fb97-e2c4-4afb-810f-785e4459b194"],
        ),
        (
            format!("mkfifo {t}/f"),
            &[
                "9d779ce8-5256-4b13-8b6f-b91c602b43f4",
                "999c3b12-0a8c-40b6-8e13-dd7d62b75c7a",
            ],
        ),
        (
            format!("nohup ls {t}/"),
            &[
                "e4ffe466-6ff8-48d4-94bd-e32d1a6061e2",
                "457df417-8b9d-4912-85f3-9dbda39c3645",
            ],
        ),
        (
            "uname -m | grep x86_64".into(),
            &["d27ab432-2199-483f-a297-03633c05bae6"],
        ),
        (
            format!("cp /bin/true {t}/x && {t}/x"),
            &["312b42b1-bded-4441-8b58-163a3af58775"],
        ),
        (
            format!("cp /bin/true {shm} && {shm}; rm -f {shm}"),
            &["5cd16c8f-44a6-4654-81e7-a84d6db507d4"],
        ),
        (
            format!("cat {t}/.bash_history"),
            &["d7821ff1-4527-4e33-9f84-d0d57fa2fb66"],
        ),
        (
            "cat /etc/sudoers".into(),
            &["0f79c4d2-4e1f-4683-9c36-b5469a665e06"],
        ),
        (
            "sh -c 'echo true | bash'".into(),
            &["880973f3-9708-491c-a77b-2a35a1921158"],
        ),
        (
            "/usr/bin/python3 -m http.server --help".into(),
            &["3f0f5957-04f8-4792-ad89-192b0303bde6"],
        ),
        (
            "env /bin/sh -c true".into(),
            &["bed978f8-7f3a-432b-82c5-9286a9b3031a"],
        ),
        (
            "echo | nice /bin/sh".into(),
            &["093d68c7-762a-42f4-9f46-95e79142571a"],
        ),
        (
            format!("find {t} -perm -4000 -type f"),
            &[
                "8344c0e5-5783-47cc-9cf9-a0f7fd03e6cf",
                "0cf7a157-8879-41a2-8f55-388dd23746b7",
            ],
        ),
        (
            "stat /.dockerenv".into(),
            &["11701de9-d5a5-44aa-8238-84252f131895"],
        ),
        (
            "cat /proc/1/cgroup".into(),
            &["746c86fb-ccda-4816-8997-01386263acc4"],
        ),
        (
            "env http_proxy=http://127.0.0.1:9 true".into(),
            &["72f4ab3f-787d-495d-a55d-68c2ff46cf4c"],
        ),
        (
            format!("cp /etc/passwd {t}/passwd.bak"),
            &["fa4aaed5-4fe0-498d-bbc0-08e3346387ba"],
        ),
        (
            format!("touch -t 202001010000 {t}/x.service"),
            &["31545105-3444-4584-bebf-c466353230d2"],
        ),
        (
            "bash -i -c true".into(),
            &["6104e693-a7d6-4891-86cb-49a258523559"],
        ),
        (
            "grep filebeat /etc/passwd".into(),
            &["c9d8b7fd-78e4-44fe-88f6-599135d46d60"],
        ),
        (
            "grep frpc /etc/passwd".into(),
            &["e34cfa0c-0a50-4210-9cb3-5632d08eb041"],
        ),
        (
            "curl -s -A test http://127.0.0.1:9/".into(),
            &["b86d356d-6093-443d-971c-9b07db583c68"],
        ),
        (
            "/usr/bin/python3 -c 'import pty; pty.spawn'".into(),
            &["c4042d54-110d-45dd-a0e1-05c47822c937"],
        ),
        (
            "/usr/bin/python3 -c \"import os; os.system('/bin/sh -c true')\"".into(),
            &["2d2f44ff-4611-4778-a8fc-323a0e9850cc"],
        ),
        (
            format!("sh -c 'ls {t}/'"),
            &["30bcce26-51c5-49f2-99c8-7b59e3af36c7"],
        ),
        (
            format!("dd if=/dev/zero of={t}/x count=1"),
            &["2953194b-e33c-4859-b9e8-05948c167447"],
        ),
        (
            "awk 'BEGIN {system(\"/bin/sh -c true\")}'".into(),
            &["8c1a5675-cb85-452f-a298-b01b22a51856"],
        ),
        (
            "find . -maxdepth 0 -exec /bin/sh -c true ';'".into(),
            &["6adfbf8f-52be-4444-9bac-81b539624146"],
        ),
        (
            format!("bash -c 'echo > /dev/tcp/127.0.0.2/{port}'"),
            &["83dcd9f6-9ca8-4af7-a16e-a1c7a6b51871"],
        ),
    ];
    let mut expected = BTreeSet::new();
    for (command, fires) in &commands {
        // Only commands whose program this machine has (curl is not everywhere).
        let program = command
            .split_whitespace()
            .find(|w| !w.contains('='))
            .unwrap();
        let installed = program.starts_with('/')
            || PATH.split(':').any(|d| Path::new(d).join(program).exists());
        if !installed {
            eprintln!("skipped (no {program}): {command}");
            continue;
        }
        sh(dir.path(), command);
        expected.extend(fires.iter().copied());
    }
    let _ = std::fs::remove_file(&shm);
    assert!(
        expected.len() >= 20,
        "only {} rules expected",
        expected.len()
    );

    let fired = || -> BTreeSet<String> {
        c.findings(|f| f.detector == Detector::Sigma && from_this_test(f))
            .into_iter()
            .map(|f| f.rule_id)
            .collect()
    };
    eventually(Duration::from_secs(20), || {
        expected
            .iter()
            .all(|id| fired().contains(*id))
            .then_some(())
    })
    .await;
    let fired = fired();
    let missing: Vec<_> = expected.iter().filter(|id| !fired.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "expected rules that did not fire: {missing:?}; fired: {fired:?}"
    );
    assert!(
        fired.len() >= 20,
        "{} distinct Sigma rules fired",
        fired.len()
    );

    let rules = corpus_rules(&corpus);
    let findings = c.findings(|f| f.detector == Detector::Sigma && from_this_test(f));
    for f in &findings {
        let (title, level, author) = rules
            .get(&f.rule_id)
            .unwrap_or_else(|| panic!("{} is a corpus rule", f.rule_id));
        assert_eq!(&f.title, title, "{}", f.rule_id);
        assert_eq!(
            f.severity,
            severity_of_level(level),
            "{} level {level}",
            f.rule_id
        );
        assert_eq!(f.author.as_deref(), Some(author.as_str()), "{}", f.rule_id);
        assert!(!f.rule_id.is_empty() && !title.is_empty() && !author.is_empty());
        assert!(!f.tags.is_empty(), "{} carries its tags", f.rule_id);
    }
    let back_connect = findings
        .iter()
        .find(|f| f.rule_id == "83dcd9f6-9ca8-4af7-a16e-a1c7a6b51871")
        .unwrap();
    assert!(
        matches!(&back_connect.triggers[0].detail, EventDetail::Connect(c) if c.destination_port == port),
        "the network_connection rule fired on the connect: {:?}",
        back_connect.triggers
    );
    eprintln!(
        "{} distinct Sigma rules of the shared corpus fired from {} commands ({} findings)",
        fired.len(),
        commands.len(),
        findings.len()
    );
    drop(listener);
}

/// Must-show 3: a benign workload (compile and run a C program, ls, git init/status,
/// apt-cache policy) raises no finding of severity high or above among its own processes,
/// with the whole corpus and the example policy loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benign_workload_raises_nothing_high_under_the_corpus_and_the_example_policy() {
    let corpus = sigma_corpus();
    let policy = example_policy();
    let s = setup(&[
        "--sigma",
        corpus.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ])
    .await;
    let c = &s.collector;
    let loaded = c.log_lines("rules loaded:").pop().unwrap();
    assert!(
        sigma_rules_loaded(c) >= 120 && loaded.contains("policy)"),
        "{loaded}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mark = marker("benign");
    let hello = workload::compile_c(
        dir.path(),
        "hello",
        r#"#include <stdio.h>
           int main(int argc, char **argv) { printf("hello %s\n", argc > 1 ? argv[1] : ""); return 0; }"#,
    );
    let run = |program: &str, args: &[&str]| {
        let child = Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .env("PATH", PATH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let pid = child.id();
        workload::finish(child, program);
        pid
    };
    let mut pids = HashSet::new();
    pids.insert(run(hello.to_str().unwrap(), &[&mark]));
    pids.insert(run("ls", &["-la"]));
    pids.insert(run("git", &["init", "-q"]));
    pids.insert(run("git", &["status"]));
    pids.insert(run("apt-cache", &["policy", "bash"]));
    // The compiler ran before these pids were taken: its processes descend from `cc`, which
    // is this test's child; find them by their parent's command line instead.
    let source = dir.path().join("hello.c").to_string_lossy().into_owned();
    let is_workload = |p: &protocol::Process, ancestry: &[protocol::Ancestor]| {
        pids.contains(&p.pid)
            || ancestry
                .iter()
                .any(|a| pids.contains(&a.pid) || a.argv.contains(&source))
            || p.argv.contains(&source)
    };

    // The sensor saw the workload: the program, the compiler's passes, git and apt-cache.
    c.wait_event("hello exec", |e| is_exec_with(e, &mark)).await;
    for name in ["cc1", "git", "apt-cache"] {
        c.wait_event(name, |e| {
            matches!(e.detail, EventDetail::Exec(_))
                && e.process.name == name
                && is_workload(&e.process, &e.ancestry)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // findings of the last processes
    let ours = c.findings(|f| is_workload(&f.process, &f.ancestry));
    for f in &ours {
        eprintln!(
            "workload finding: {} {} {} ({})",
            f.severity,
            f.rule_id,
            f.title,
            f.process.command_line()
        );
    }
    let high: Vec<_> = ours
        .iter()
        .filter(|f| f.severity >= Severity::High)
        .collect();
    assert!(
        high.is_empty(),
        "benign workload raised findings of high or above: {high:#?}"
    );
}

/// Must-show 4: after a broken policy file is written over a good one, the old rules still
/// fire and one error names the file and line; the next valid file takes effect without a
/// restart. SIGHUP reloads too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_keeps_the_running_rules_and_the_next_valid_one_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let (first, second) = (marker("reload-first"), marker("reload-second"));
    let policy = |id: &str, mark: &str| {
        format!(
            "version: 1\nrules:\n  - id: {id}\n    title: Marker {id}\n    severity: high\n    \
             actions: [notify]\n    match:\n      argv_contains: {mark}\n"
        )
    };
    std::fs::write(&path, policy("reload-first", &first)).unwrap();
    let s = setup(&["--policy", path.to_str().unwrap()]).await;
    let c = &s.collector;
    let collector_pid = c.pid();

    let fires = |rule: &'static str, mark: String| async move {
        let status = Command::new("/bin/true").arg(&mark).status().unwrap();
        assert!(status.success());
        c.wait_finding(rule, |f| {
            f.rule_id == rule && f.process.argv.contains(&mark)
        })
        .await
    };
    let f = fires("reload-first", format!("{first}-1")).await;
    assert_eq!((f.detector, f.severity), (Detector::Policy, Severity::High));

    // A broken file over the good one: line 9 is mis-indented.
    let broken = format!("{}     severity: low\n", policy("reload-broken", &second));
    std::fs::write(&path, broken).unwrap();
    let location = format!("{}:9", path.display());
    let errors = || c.log_lines("rules not reloaded");
    eventually(Duration::from_secs(10), || {
        (!errors().is_empty()).then_some(())
    })
    .await;
    assert_eq!(errors().len(), 1, "{:?}", errors());
    assert!(
        errors()[0].contains("ERROR") && errors()[0].contains(&location),
        "{:?}",
        errors()
    );
    // The old rule still fires, on a new process; the error is not repeated at every poll.
    fires("reload-first", format!("{first}-2")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        errors().len(),
        1,
        "one error per failed load: {:?}",
        errors()
    );

    // SIGHUP reloads: the file is still broken, so one more error and the same rules.
    c.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), || {
        (errors().len() == 2).then_some(())
    })
    .await;
    assert!(
        errors()[1].contains("SIGHUP") && errors()[1].contains(&location),
        "{:?}",
        errors()
    );
    fires("reload-first", format!("{first}-3")).await;

    // The next valid file replaces the rules, without a restart.
    std::fs::write(&path, policy("reload-second", &second)).unwrap();
    eventually(Duration::from_secs(10), || {
        (!c.log_lines("rules reloaded (file change)").is_empty()).then_some(())
    })
    .await
    .expect("the valid file is loaded");
    let f = fires("reload-second", format!("{second}-1")).await;
    assert_eq!(f.title, "Marker reload-second");
    let gone = format!("{first}-4");
    Command::new("/bin/true").arg(&gone).status().unwrap();
    c.wait_event("exec after reload", |e| is_exec_with(e, &gone))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        c.findings(|f| f.process.argv.contains(&gone)).is_empty(),
        "the old rule is gone"
    );
    assert_eq!(c.pid(), collector_pid);
    assert!(c.log_lines("panicked").is_empty());
}

/// Must-show 5: the memory rule fires for a process whose resident memory crosses the
/// threshold, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_rule_fires_once_resident_memory_crosses_its_threshold() {
    const THRESHOLD: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "rules:\n  - id: test-rss-64mb\n    title: Resident memory above 64 MB\n    severity: medium\n    \
         actions: [log]\n    match:\n      rss_above_mb: 64\n",
    )
    .unwrap();
    let s = setup(&[
        "--policy",
        path.to_str().unwrap(),
        "--memory-sample-interval-secs",
        "1",
    ])
    .await;
    let c = &s.collector;

    // Grows its resident memory by 16 MiB (written, so resident) per line read, and says how
    // much it has after each step.
    let mut child = python(
        "import os, sys\n\
         page = os.sysconf('SC_PAGE_SIZE')\n\
         rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page\n\
         blocks = []\n\
         print(rss(), flush=True)\n\
         while sys.stdin.readline():\n\
         \x20   blocks.append(b'x' * (16 << 20))\n\
         \x20   print(rss(), flush=True)\n",
    );
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rss: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    let ours = || c.findings(|f| f.process.pid == pid && f.rule_id == "test-rss-64mb");
    let mut below = 0;
    while rss <= THRESHOLD {
        // Several samples (one a second) of the process at this size: nothing yet.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            ours().is_empty(),
            "fired at {} MiB, below the threshold",
            rss >> 20
        );
        below += 1;
        writeln!(stdin, "more").unwrap();
        rss = lines.next().unwrap().unwrap().parse().unwrap();
    }
    assert!(
        below >= 3,
        "the process was watched below the threshold {below} times"
    );
    let finding = c
        .wait_finding("resident memory above 64 MB", |f| {
            f.process.pid == pid && f.rule_id == "test-rss-64mb"
        })
        .await;
    match &finding.triggers[0].detail {
        EventDetail::MemorySample(sample) => {
            assert!(
                sample.rss_bytes > THRESHOLD && sample.rss_bytes <= rss + (4 << 20),
                "{}",
                sample.rss_bytes
            )
        }
        other => panic!("triggered by {other:?}"),
    }
    assert_eq!(
        (finding.detector, finding.severity),
        (Detector::Policy, Severity::Medium)
    );
    assert_eq!(finding.recommended_actions, [protocol::ActionKind::Log]);
    // Aggregated: one finding for the process, however many samples exceed the threshold.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ours().len(), 1);
    drop(stdin);
    workload::finish(child, "memory grower");
}
