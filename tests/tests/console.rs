//! The web console end to end: the real collector (eBPF in this kernel), the real responder
//! and actuator, a real nats-server, `osprey-console`, and headless Chromium driving the page.
//! Connect hooks attach to a cgroup of the test's own and the test's processes run in it.
//! Screenshots of every page go to `target/console-screenshots/`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command as Proc, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, Locator};
use osprey_tests::{
    browser::Browser,
    cgroup::TestCgroup,
    collector::Collector,
    console::{header, Console, Http},
    eventually, marker, metrics,
    nats::NatsServer,
    responder::Responder,
    workload,
};
use protocol::{signing::KeyPair, AuditRecord, Decision, Finding, Severity};

const NOTHING_LOCAL: &[&str] = &["--local-networks", "169.254.0.0/16"];
const NETWORK_RULE: &str = "osprey.script-engine-network";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
/// An operator token (its SHA-256 is in the console's configuration).
const TOKEN: &str = "e2e-operator-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "e2e-viewer-token-0123456789abcdef";

/// High-impact: the policy kills script engines that phone out, after an operator approves.
const POLICY: &str = "approval_required: [kill]\nrules:\n  - name: kill-script-engines\n    match:\n      rule_ids: [osprey.script-engine-network]\n      min_severity: high\n    actions: [kill]\n";

struct Env {
    dir: tempfile::TempDir,
    nats: NatsServer,
    client: async_nats::Client,
    cgroup: TestCgroup,
    responder_key: KeyPair,
    console_key: KeyPair,
    listener: TcpListener,
    /// Where the collector serves /metrics.
    collector_metrics: String,
}

impl Env {
    async fn new(tag: &str) -> Env {
        let nats = NatsServer::start();
        let client = nats.client().await;
        Env {
            dir: tempfile::tempdir().unwrap(),
            cgroup: TestCgroup::create(tag),
            nats,
            client,
            responder_key: KeyPair::generate().unwrap(),
            console_key: KeyPair::generate().unwrap(),
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            collector_metrics: format!("127.0.0.1:{}", osprey_tests::nats::free_port()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn collector(&self) -> Collector {
        let config = self.path("collector.yaml");
        std::fs::write(
            &config,
            format!(
                "metrics_address: {m}\nsensor:\n  cgroup_root: {cg}\nactuator:\n  trusted_keys: [\"{r}\", \"{c}\"]\n  state_dir: {d}/state\n  audit_file: {d}/actuator-audit.jsonl\n  quarantine_dir: {d}/quarantine\n  dump_dir: {d}/dumps\n",
                m = self.collector_metrics,
                cg = self.cgroup.path.display(),
                r = self.responder_key.public_base64(),
                c = self.console_key.public_base64(),
                d = self.dir.path().display(),
            ),
        )
        .unwrap();
        Collector::start_with_config(
            &self.client,
            &self.nats.url(),
            &self.path("spool"),
            &config,
            None,
            NOTHING_LOCAL,
        )
        .await
    }

    /// The responder, trusting the console's key for approvals and control; returns it and
    /// the address of its /metrics.
    fn responder(&self) -> (Responder, String) {
        std::fs::write(
            self.path("responder.key"),
            self.responder_key.secret_base64(),
        )
        .unwrap();
        std::fs::write(self.path("response-policy.yaml"), POLICY).unwrap();
        let metrics = format!("127.0.0.1:{}", osprey_tests::nats::free_port());
        let config = self.path("responder.yaml");
        std::fs::write(
            &config,
            format!(
                "nats:\n  url: {url}\npolicy: {d}/response-policy.yaml\nsigning_key: {d}/responder.key\noperator_keys: [\"{op}\"]\naudit_file: {d}/responder-audit.jsonl\nstate_dir: {d}/responder\nheartbeat_timeout_secs: 0\nmetrics_address: {metrics}\n",
                url = self.nats.url(),
                d = self.dir.path().display(),
                op = self.console_key.public_base64(),
            ),
        )
        .unwrap();
        (Responder::start(&config, &[]), metrics)
    }

    fn console_config(&self) -> PathBuf {
        std::fs::write(self.path("console.key"), self.console_key.secret_base64()).unwrap();
        let hash = {
            let mut child = Proc::new(osprey_tests::bin_dir().join("osprey-console"))
                .arg("hash-password")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("osprey-console is built");
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "hash-password failed");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let config = self.path("console.yaml");
        std::fs::write(
            &config,
            format!(
                "nats:\n  url: {url}\ndatabase: {d}/console.db\noperator_key: {d}/console.key\nusers:\n  - name: {USER}\n    password_hash: \"{hash}\"\ntokens:\n  - name: ci\n    sha256: {tok}\n  - name: dash\n    role: viewer\n    sha256: {view}\n",
                url = self.nats.url(),
                d = self.dir.path().display(),
                tok = sha256_hex(TOKEN),
                view = sha256_hex(VIEWER_TOKEN),
            ),
        )
        .unwrap();
        config
    }

    /// A python3 in the test's cgroup that connects to the test's listener (a high finding:
    /// loopback counts as non-local here) and then waits.
    fn phone_out(&self, tag: &str) -> Child {
        let port = self.listener.local_addr().unwrap().port();
        let script = format!(
            "# {tag}\nimport socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\ntime.sleep(600)\n"
        );
        let mut cmd = Proc::new(workload::PYTHON);
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.cgroup.enter(&mut cmd).spawn().expect("python3 runs")
    }
}

fn sha256_hex(text: &str) -> String {
    let out = Proc::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn audit_lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is an AuditRecord"))
        .collect()
}

async fn wait_audit(path: &Path, what: &str, pred: impl Fn(&AuditRecord) -> bool) -> AuditRecord {
    eventually(Duration::from_secs(25), || {
        audit_lines(path).into_iter().find(|r| pred(r))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no audit record for {what} within 25 s: {:#?}",
            audit_lines(path)
        )
    })
}

async fn high_finding(collector: &Collector, pid: u32) -> Finding {
    collector
        .wait_finding("script engine phoning out", |f| {
            f.process.pid == pid && f.rule_id == NETWORK_RULE
        })
        .await
}

/// When the test's own subscriber received the finding with this id.
fn arrival(collector: &Collector, id: &str) -> protocol::Timestamp {
    let r = collector.received.lock().unwrap();
    let i = r
        .findings
        .iter()
        .position(|f| f.id.0 == id)
        .expect("the finding was received");
    r.finding_arrivals[i]
}

// ---------- browser helpers ----------

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .every(Duration::from_millis(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page within 20 s: {e}"))
}

/// Polls the text of `css` until `pred` holds.
async fn wait_text(c: &Client, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if pred(&t) {
                    return t;
                }
            }
        }
        assert!(Instant::now() < deadline, "{what}: {css} never matched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn go(c: &Client, base: &str, hash: &str) {
    c.goto(&format!("{base}/{hash}")).await.expect("navigate");
}

async fn confirm(c: &Client) {
    let modal = wait_css(c, "#modal:not([hidden])").await;
    assert!(modal.is_displayed().await.unwrap());
    wait_css(c, "#modal-confirm").await.click().await.unwrap();
}

/// The whole browser flow takes well under a minute; a WebDriver call that never returns
/// must fail the test rather than hold the suite.
const BROWSER_FLOW_LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_findings_and_acts_from_the_browser() {
    tokio::time::timeout(BROWSER_FLOW_LIMIT, browser_flow())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the browser flow did not finish within {BROWSER_FLOW_LIMIT:?}; the last screenshot in {} shows where it stood",
                osprey_tests::browser::screenshot_dir().display()
            )
        });
}

async fn browser_flow() {
    let started = Instant::now();
    let env = Env::new("console-ui").await;
    let collector = env.collector().await;
    let (responder, _) = env.responder();
    let console = Console::start(&env.console_config());
    let base = console.url();
    let browser = Browser::start().await;
    let c = &browser.client;

    // Log in.
    c.goto(&base).await.unwrap();
    wait_css(c, "#login-user").await;
    browser.screenshot("01-login").await;
    wait_css(c, "#login-user")
        .await
        .send_keys(USER)
        .await
        .unwrap();
    wait_css(c, "#login-password")
        .await
        .send_keys(PASSWORD)
        .await
        .unwrap();
    wait_css(c, "#login-submit").await.click().await.unwrap();
    wait_text(c, "#who", "logged in", |t| t.contains(USER)).await;

    // The findings page, open before the finding exists.
    go(c, &base, "#/findings").await;
    wait_css(c, "#findings").await;
    wait_css(c, "#live.on").await;
    c.execute("window.__sameDocument = 'yes'; return true;", vec![])
        .await
        .unwrap();
    let mut victim = env.phone_out(&marker("victim"));
    let finding = high_finding(&collector, victim.id()).await;
    let published = arrival(&collector, &finding.id.0);
    let row = format!("#findings tr[data-id=\"{}\"]", finding.id);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if c.find(Locator::Css(&row)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finding did not appear on the open page within 2 s of its publication"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latency_ms =
        (protocol::Timestamp::now().unix_nanos() - published.unix_nanos()) as f64 / 1e6;
    eprintln!("MEASURE sse_latency_ms={latency_ms:.0}");
    let same: serde_json::Value = c
        .execute("return window.__sameDocument || null;", vec![])
        .await
        .unwrap();
    assert_eq!(same, "yes", "the page was reloaded");

    // A second process, also live; then the filter narrows the list to the victim's finding.
    let mut other = env.phone_out(&marker("other"));
    let other_finding = high_finding(&collector, other.id()).await;
    wait_css(
        c,
        &format!("#findings tr[data-id=\"{}\"]", other_finding.id),
    )
    .await;
    let rows_before = c
        .find_all(Locator::Css("#findings tbody tr"))
        .await
        .unwrap()
        .len();
    assert!(rows_before >= 2);
    let victim_marker = finding
        .process
        .argv
        .iter()
        .find_map(|a| {
            a.split_whitespace()
                .find(|w| w.contains("osprey-e2e-victim"))
        })
        .expect("the victim's marker is in its argv")
        .to_string();
    wait_css(c, "#filter-severity")
        .await
        .select_by_value("high")
        .await
        .unwrap();
    wait_css(c, "#filter-q")
        .await
        .send_keys(&victim_marker)
        .await
        .unwrap();
    wait_css(c, "#filter-apply").await.click().await.unwrap();
    wait_text(c, "#findings-count", "the filtered list", |t| {
        t == "1 shown"
    })
    .await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for e in c
            .find_all(Locator::Css("#findings tbody tr"))
            .await
            .unwrap()
        {
            ids.push(e.attr("data-id").await.unwrap().unwrap_or_default());
        }
        ids
    };
    assert_eq!(
        ids,
        vec![finding.id.0.clone()],
        "the filter narrows the list"
    );
    browser.screenshot("03-findings-filtered").await;

    // The detail page: ancestry, argv; kill after a confirm.
    wait_css(c, &row).await.click().await.unwrap();
    let tree = wait_css(c, "#ancestry").await.text().await.unwrap();
    assert!(tree.contains("python3"), "{tree}");
    let nodes = c
        .find_all(Locator::Css("#ancestry li"))
        .await
        .unwrap()
        .len();
    assert_eq!(
        nodes,
        finding.ancestry.len() + 1,
        "the process and each ancestor"
    );
    if let Some(parent) = finding.ancestry.first() {
        assert!(tree.contains(&parent.name), "{tree} lacks {}", parent.name);
    }
    let argv = wait_css(c, "#argv").await.text().await.unwrap();
    assert!(argv.contains(&victim_marker), "{argv}");
    browser.screenshot("04-finding").await;
    wait_css(c, "#act-kill").await.click().await.unwrap();
    wait_css(c, "#modal:not([hidden])").await;
    browser.screenshot("05-confirm-kill").await;
    confirm(c).await;
    wait_text(c, "#action-result", "the kill's answer", |t| {
        t.starts_with("ok")
    })
    .await;
    let status = eventually(Duration::from_secs(10), || victim.try_wait().ok().flatten())
        .await
        .expect("the victim is killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let host_line = wait_audit(&env.path("actuator-audit.jsonl"), "the kill", |r| {
        r.action == "kill" && r.finding_id.as_ref() == Some(&finding.id)
    })
    .await;
    assert_eq!(host_line.decision, Decision::Executed, "{host_line:?}");
    assert_eq!(host_line.actor.name.as_deref(), Some(USER));
    assert_eq!(
        host_line.actor.key_id.as_deref(),
        Some(env.console_key.public_base64().as_str())
    );
    wait_text(c, "#finding-actions", "the kill's audit row", |t| {
        t.lines()
            .any(|l| l.contains("actuator") && l.contains("executed") && l.contains(USER))
    })
    .await;
    browser.screenshot("06-finding-killed").await;

    // The other process's kill waits for approval: approve it from the page.
    let pending = wait_audit(
        &env.path("responder-audit.jsonl"),
        "awaiting approval",
        |r| {
            r.decision == Decision::AwaitingApproval
                && r.finding_id.as_ref() == Some(&other_finding.id)
        },
    )
    .await;
    let pending_id = pending.pending_id.clone().expect("a pending id");
    go(c, &base, "#/approvals").await;
    let pending_row = format!("#approvals tr[data-pending=\"{pending_id}\"]");
    wait_css(c, &pending_row).await;
    browser.screenshot("07-approvals").await;
    wait_css(c, &format!("{pending_row} button.approve"))
        .await
        .click()
        .await
        .unwrap();
    confirm(c).await;
    wait_text(c, "#approval-result", "the approval", |t| {
        t.contains("sent")
    })
    .await;
    let status = eventually(Duration::from_secs(20), || other.try_wait().ok().flatten())
        .await
        .expect("the approved kill is executed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let approved = wait_audit(&env.path("responder-audit.jsonl"), "the approval", |r| {
        r.decision == Decision::Approved && r.pending_id.as_deref() == Some(pending_id.as_str())
    })
    .await;
    assert_eq!(approved.actor.name.as_deref(), Some(USER));
    wait_audit(
        &env.path("responder-audit.jsonl"),
        "the approved kill",
        |r| r.decision == Decision::Executed && r.finding_id.as_ref() == Some(&other_finding.id),
    )
    .await;

    // Manual block with a TTL, then unblock, from the actions page.
    go(c, &base, "#/actions").await;
    wait_css(c, "#manual-kind")
        .await
        .select_by_value("block")
        .await
        .unwrap();
    wait_css(c, "#manual-cidr")
        .await
        .send_keys("203.0.113.7/32")
        .await
        .unwrap();
    wait_css(c, "#manual-ttl")
        .await
        .send_keys("120")
        .await
        .unwrap();
    browser.screenshot("08-actions").await;
    wait_css(c, "#manual-submit").await.click().await.unwrap();
    confirm(c).await;
    wait_text(c, "#manual-result", "the block", |t| t.starts_with("ok")).await;
    wait_css(c, "#manual-kind")
        .await
        .select_by_value("unblock")
        .await
        .unwrap();
    wait_css(c, "#manual-submit").await.click().await.unwrap();
    confirm(c).await;
    wait_text(c, "#manual-result", "the unblock", |t| t.starts_with("ok")).await;
    wait_audit(&env.path("actuator-audit.jsonl"), "the unblock", |r| {
        r.action == "unblock" && r.actor.name.as_deref() == Some(USER)
    })
    .await;

    // Responder mode: dry-run on through a signed control message, audited with the name.
    go(c, &base, "#/responder").await;
    wait_text(c, "#responder-mode", "the responder's mode", |t| {
        t.contains("OFF")
    })
    .await;
    browser.screenshot("09-responder").await;
    wait_css(c, "#responder-toggle")
        .await
        .click()
        .await
        .unwrap();
    confirm(c).await;
    wait_text(c, "#responder-mode", "dry-run on", |t| t.contains("ON")).await;
    let switched = wait_audit(
        &env.path("responder-audit.jsonl"),
        "the dry-run switch",
        |r| r.action == "dry_run" && r.decision == Decision::Executed,
    )
    .await;
    assert_eq!(switched.actor.name.as_deref(), Some(USER));
    assert_eq!(switched.target.as_deref(), Some("on"));

    // The other pages, for the record.
    go(c, &base, "#/audit").await;
    wait_text(c, "#audit", "the audit trail", |t| t.contains("dry_run")).await;
    browser.screenshot("10-audit").await;
    go(c, &base, "#/hosts").await;
    wait_css(c, &format!("#hosts tr[data-host=\"{}\"]", collector.host)).await;
    browser.screenshot("11-hosts").await;
    go(c, &base, "#/overview").await;
    wait_css(c, "#health tbody tr").await;
    browser.screenshot("02-overview").await;

    if let Some(pid) = console.pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(rss) = status.lines().find(|l| l.starts_with("VmRSS")) {
            eprintln!(
                "MEASURE console_{}",
                rss.split_whitespace().collect::<Vec<_>>().join("_")
            );
        }
    }
    browser.close().await;
    responder.stop();
    eprintln!(
        "MEASURE browser_test_secs={:.1}",
        started.elapsed().as_secs_f64()
    );
}

/// Publishes a synthetic finding through JetStream like a collector does (with its id as
/// `Nats-Msg-Id`).
async fn publish_finding(js: &async_nats::jetstream::Context, host: &str, i: u32) -> String {
    let exec_id: protocol::ExecId = format!("0000abcd-{}-100-0", 100_000 + i).parse().unwrap();
    let process =
        protocol::Process::new(exec_id, "/usr/bin/true", vec!["true".into(), i.to_string()]);
    let finding = Finding {
        id: protocol::FindingId::new(host, &exec_id, protocol::Detector::Policy, "synthetic"),
        time: protocol::Timestamp::now(),
        host: host.to_string(),
        detector: protocol::Detector::Policy,
        rule_id: "synthetic".into(),
        title: format!("synthetic {i}"),
        description: None,
        author: None,
        severity: Severity::Low,
        tags: vec![],
        process,
        ancestry: vec![],
        triggers: vec![],
        recommended_actions: vec![],
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", finding.id.0.as_str());
    js.publish_with_headers(
        protocol::subject::findings(host, Severity::Low),
        headers,
        protocol::encode(&finding).unwrap().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("JetStream acknowledges");
    finding.id.0
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_authenticates_renders_ocsf_counts_metrics_and_survives_a_restart() {
    let env = Env::new("console-api").await;
    let collector = env.collector().await;
    let (responder, responder_metrics) = env.responder();
    let mut console = Console::start(&env.console_config());
    let http = Http::new(&console.url());
    let bearer = format!("Bearer {TOKEN}");
    let auth: &[(&str, &str)] = &[("authorization", bearer.as_str())];

    // Without a session or token: 401. A wrong password: 401, no session.
    assert_eq!(http.get("/api/v1/findings", &[]).0, 401);
    assert_eq!(http.post("/api/v1/actions", &[], "{}").0, 401);
    let wrong = http.post(
        "/api/v1/login",
        &[],
        &format!(r#"{{"username":"{USER}","password":"wrong"}}"#),
    );
    assert_eq!(wrong.0, 401, "{}", wrong.2);
    assert!(
        header(&wrong, "set-cookie").is_none(),
        "no session for a wrong password"
    );
    let login = http.post(
        "/api/v1/login",
        &[],
        &format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#),
    );
    assert_eq!(login.0, 200, "{}", login.2);
    let cookie = header(&login, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = json(&login.2)["csrf"].as_str().unwrap().to_string();

    // A state change without the CSRF token: 403, and the responder's mode is unchanged.
    let no_csrf = http.post(
        "/api/v1/responder",
        &[("cookie", &cookie)],
        r#"{"dry_run":true}"#,
    );
    assert_eq!(no_csrf.0, 403, "{}", no_csrf.2);
    let viewer = format!("Bearer {VIEWER_TOKEN}");
    assert_eq!(
        http.post(
            "/api/v1/responder",
            &[("authorization", &viewer)],
            r#"{"dry_run":true}"#
        )
        .0,
        403
    );
    let mode = http.get("/api/v1/responder", &[("cookie", &cookie)]);
    assert_eq!(mode.0, 200, "{}", mode.2);
    assert_eq!(json(&mode.2)["dry_run"], false, "nothing changed");
    assert!(!audit_lines(&env.path("responder-audit.jsonl"))
        .iter()
        .any(|r| r.action == "dry_run"));

    // Dry-run on through the API (session + CSRF): the responder honours it.
    let on = http.post(
        "/api/v1/responder",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        r#"{"dry_run":true}"#,
    );
    assert_eq!(on.0, 200, "{}", on.2);
    assert_eq!(json(&on.2)["dry_run"], true);
    let mut dry = env.phone_out(&marker("dry"));
    let dry_finding = high_finding(&collector, dry.id()).await;
    let line = wait_audit(&env.path("responder-audit.jsonl"), "the dry run", |r| {
        r.finding_id.as_ref() == Some(&dry_finding.id)
    })
    .await;
    assert_eq!(line.decision, Decision::DryRun, "{line:?}");
    assert!(dry.try_wait().unwrap().is_none(), "dry-run sent nothing");
    let _ = dry.kill();
    let _ = dry.wait();
    let off = http.post("/api/v1/responder", auth, r#"{"dry_run":false}"#);
    assert_eq!(json(&off.2)["dry_run"], false, "{}", off.2);
    // A control message signed by a key the responder does not trust is refused and audited.
    let stranger = KeyPair::generate().unwrap();
    let refused = client::send_control(
        &env.client,
        &client::Operator {
            key: &stranger,
            name: Some("mallory"),
        },
        Some(true),
        Duration::from_secs(10),
    )
    .await
    .expect("the responder answers");
    assert!(!refused.accepted && !refused.dry_run, "{refused:?}");
    wait_audit(
        &env.path("responder-audit.jsonl"),
        "the refused control",
        |r| {
            r.action == "dry_run"
                && r.decision == Decision::Refused
                && r.actor.name.as_deref() == Some("mallory")
        },
    )
    .await;

    // A second high finding (awaiting approval this time), then the JSON and OCSF APIs.
    let mut second = env.phone_out(&marker("second"));
    let second_finding = high_finding(&collector, second.id()).await;
    wait_audit(
        &env.path("responder-audit.jsonl"),
        "awaiting approval",
        |r| {
            r.finding_id.as_ref() == Some(&second_finding.id)
                && r.decision == Decision::AwaitingApproval
        },
    )
    .await;
    let ours: BTreeSet<String> = [dry_finding.id.0.clone(), second_finding.id.0.clone()].into();
    let listed = eventually(Duration::from_secs(10), || {
        let (status, _, body) = http.get("/api/v1/findings?severity=high&limit=1000", auth);
        assert_eq!(status, 200, "{body}");
        let items = json(&body)["items"].as_array().unwrap().clone();
        let ids: BTreeSet<String> = items
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect();
        ours.is_subset(&ids).then_some(items)
    })
    .await
    .expect("both high findings are listed");
    assert!(listed.iter().all(|f| f["severity"] == "high"));
    let (_, _, body) = http.get(
        "/api/v1/findings?severity=high&format=ocsf&limit=1000",
        auth,
    );
    let ocsf = json(&body)["items"].as_array().unwrap().clone();
    let second_ocsf = ocsf
        .iter()
        .find(|o| o["finding_info"]["uid"] == second_finding.id.0.as_str())
        .expect("the OCSF rendering of the finding");
    assert_eq!(second_ocsf["class_uid"], 2004);
    assert_eq!(second_ocsf["activity_id"], 1);
    assert_eq!(second_ocsf["severity_id"], 4);
    assert_eq!(second_ocsf["process"]["pid"], second_finding.process.pid);
    assert_eq!(
        second_ocsf["process"]["cmd_line"],
        second_finding.process.argv.join(" ")
    );
    let (_, _, body) = http.get(
        &format!(
            "/api/v1/events?exec_id={}&format=ocsf",
            second_finding.process.exec_id
        ),
        auth,
    );
    let events = json(&body)["items"].as_array().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["ip"] == "127.0.0.1"),
        "the connect that triggered it, as Network Activity: {events:?}"
    );
    let _ = second.kill();
    let _ = second.wait();

    // `osprey tail --format ocsf` renders the same way.
    let mut tail = Proc::new(osprey_tests::bin_dir().join("osprey"))
        .args([
            "tail",
            "--since-start",
            "--format",
            "ocsf",
            "--nats",
            &env.nats.url(),
        ])
        .args(["--host", &collector.host])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("osprey is built");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(tail.stdout.take().unwrap()));
    let reader = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if v["finding_info"]["uid"] == second_finding.id.0.as_str() {
                return Some(v);
            }
        }
        None
    });
    let tailed = eventually(Duration::from_secs(15), || {
        reader.is_finished().then_some(())
    })
    .await;
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        tailed.is_some(),
        "osprey tail printed no OCSF line for the finding"
    );
    let line = reader.join().unwrap().expect("the finding as an OCSF line");
    assert_eq!(
        (line["class_uid"].clone(), line["severity_id"].clone()),
        (serde_json::json!(2004), serde_json::json!(4))
    );

    // Metrics, parsed by the reference OpenMetrics parser, against what happened.
    let counted = eventually(Duration::from_secs(15), || {
        let received = collector.findings(|_| true);
        let per_severity: BTreeMap<Severity, usize> =
            received.iter().fold(BTreeMap::new(), |mut m, f| {
                *m.entry(f.severity).or_default() += 1;
                m
            });
        let (status, _, text) = http.get("/metrics", &[]);
        assert_eq!(status, 200);
        let samples = metrics::parse(&text);
        let console_ok = Severity::ALL.iter().all(|s| {
            metrics::value(
                &samples,
                &format!("osprey_console_findings_total{{severity=\"{s}\"}}"),
            ) as usize
                == per_severity.get(s).copied().unwrap_or(0)
        });
        let responder_lines = audit_lines(&env.path("responder-audit.jsonl"));
        let decisions = |decision: &str| {
            responder_lines
                .iter()
                .filter(|r| r.decision.as_str() == decision && r.action == "kill")
                .count()
        };
        let text = Http::new(&format!("http://{responder_metrics}")).get("/metrics", &[]).2;
        let responder = metrics::parse(&text);
        let responder_ok = ["dry_run", "awaiting_approval"].iter().all(|d| {
            metrics::value(
                &responder,
                &format!("osprey_responder_decisions_total{{action=\"kill\",decision=\"{d}\"}}"),
            ) as usize
                == decisions(d)
        }) && metrics::value(&responder, "osprey_responder_pending_approvals") == 1.0
            && metrics::value(&responder, "osprey_responder_dry_run") == 0.0
            && metrics::value(
                &responder,
                "osprey_responder_findings_total{severity=\"high\"}",
            ) as usize
                == per_severity.get(&Severity::High).copied().unwrap_or(0);
        let console_audit_ok = metrics::value(
            &samples,
            "osprey_console_audit_records_total{decision=\"awaiting_approval\",source=\"responder\"}",
        ) as usize
            == decisions("awaiting_approval");
        let actions_ok = metrics::value(
            &samples,
            "osprey_console_actions_total{action=\"dry_run\",result=\"ok\"}",
        ) == 2.0
            && metrics::value(&samples, "osprey_console_logins_total{outcome=\"wrong\"}") == 1.0;
        // The collector counts the test's high findings exactly, and acknowledged publications
        // cover every finding received (other processes on the host raise findings too, so
        // the other severities move while the test runs).
        let text = Http::new(&format!("http://{}", env.collector_metrics)).get("/metrics", &[]).2;
        let host = metrics::parse(&text);
        let raised: f64 = Severity::ALL
            .iter()
            .map(|s| {
                metrics::value(
                    &host,
                    &format!("osprey_collector_findings_total{{severity=\"{s}\"}}"),
                )
            })
            .sum();
        let acked = metrics::value(&host, "osprey_collector_publish_latency_seconds_count");
        let collector_ok = metrics::value(&host, "osprey_collector_findings_total{severity=\"high\"}")
            as usize
            == per_severity.get(&Severity::High).copied().unwrap_or(0)
            && acked as usize >= received.len()
            && acked <= raised
            && metrics::value(&host, "osprey_collector_ring_buffer_size_bytes") == 8_388_608.0
            && metrics::value(&host, "osprey_collector_ring_buffer_read_bytes_total") > 0.0
            // Where its CPU went: the stages the test's events passed, and its threads.
            && ["read", "table", "publish", "detect"].iter().all(|stage| {
                metrics::value(&host, &format!("osprey_collector_stage_seconds_total{{stage=\"{stage}\"}}")) > 0.0
            })
            && metrics::value(&host, "osprey_collector_thread_cpu_seconds_total{thread=\"osprey-collecto\"}") > 0.0
            // Two script engines ran in the test's cgroup, on a host with more going on.
            && metrics::value(&host, "osprey_collector_events_total{kind=\"exec\"}") >= 2.0;
        (console_ok && responder_ok && console_audit_ok && actions_ok && collector_ok)
            .then_some((samples, responder))
    })
    .await;
    assert!(
        counted.is_some(),
        "the metrics never matched the workload: console {:?}\ncollector {:?}",
        metrics::parse(&http.get("/metrics", &[]).2),
        metrics::parse(
            &Http::new(&format!("http://{}", env.collector_metrics))
                .get("/metrics", &[])
                .2
        )
    );

    // Restart mid-stream: no finding missed, none shown twice.
    let js = async_nats::jetstream::new(env.client.clone());
    let host = "synthetic-host";
    let mut published = BTreeSet::new();
    for i in 0..300u32 {
        if i == 120 {
            console.kill();
        }
        if i == 220 {
            console.run();
        }
        published.insert(publish_finding(&js, host, i).await);
    }
    let shown = eventually(Duration::from_secs(40), || {
        let (_, _, body) = http.get(&format!("/api/v1/findings?host={host}&limit=1000"), auth);
        let items = json(&body)["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= published.len()).then_some(items)
    })
    .await
    .unwrap_or_else(|| panic!("not every finding arrived after the restart"));
    let ids: Vec<String> = shown
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "a finding is shown twice");
    assert_eq!(unique, published, "findings missed or invented");
    responder.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_speaks_tls_only_when_a_certificate_is_configured() {
    let env = Env::new("console-tls").await;
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let made = Proc::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "openssl could not make a certificate");
    let config = env.console_config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "tls:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(&config, text).unwrap();
    let console = Console::start_tls(&config);
    let url = format!("https://127.0.0.1:{}", console.port);
    let curl = |args: &[&str]| {
        let out = Proc::new("curl")
            .args(["-s", "--max-time", "10", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/api/v1/findings"),
    ]);
    assert_eq!(status, "401", "HTTPS answers, and asks for a login");
    let headers = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/json",
        "--data",
        &format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#),
        &format!("{url}/api/v1/login"),
    ]);
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {headers}"));
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let plain = Http::new(&console.url()).get("/", &[]);
    assert_ne!(plain.0, 200, "plain HTTP is not served next to TLS");
}
