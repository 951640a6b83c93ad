//! The operator's console and commands, end to end: `osprey top` in a real terminal (tmux),
//! `osprey ps`, `osprey block|unblock|suspend|resume` against a real collector (real eBPF,
//! real nats-server, real processes), and host state queries refused to host credentials.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command as Proc, Output},
    time::Duration,
};

use osprey_tests::{
    actuation::{live_exec_id, try_connects, wait_audit, wait_exit, Env},
    deployed::Stack,
    eventually, marker,
    nats::{Deployment, NatsServer},
    terminal::Tmux,
    workload,
};
use protocol::{subject, AuditRecord, Decision, ExecId, Query, QueryKind};
use std::os::unix::process::ExitStatusExt;

const NETWORK_RULE: &str = "osprey.script-engine-network";

fn osprey_bin() -> PathBuf {
    osprey_tests::bin_dir().join("osprey")
}

/// `osprey ARGS`, ignoring any `cargo xtask run` session on this machine.
fn osprey(args: &[&str]) -> Output {
    Proc::new(osprey_bin())
        .args(args)
        .env("OSPREY_SESSION", "/nonexistent")
        .env_remove("OSPREY_NATS_URL")
        .env_remove("OSPREY_OPERATOR_KEY")
        .output()
        .expect("osprey runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The operator's secret key, as `osprey keys generate` writes it.
fn operator_key(env: &Env) -> PathBuf {
    let path = env.path("operator.key");
    std::fs::write(&path, env.key.secret_base64()).unwrap();
    path
}

/// A python in the test's cgroup (no terminal anywhere: a background script engine) that
/// connects to `port` on loopback and stays.
fn beacon(env: &Env, tag: &str, port: u16) -> std::process::Child {
    let script = format!(
        "# {tag}\nimport socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\ntime.sleep(600)\n"
    );
    env.spawn(workload::PYTHON, &["-c", &script])
}

/// Field 3 of /proc/<pid>/stat (`R`, `S`, `T`, `Z`...), `None` once the pid is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Red as a terminal gets it: the 8-colour SGR or colour 1 of the 256.
fn red(line: &str) -> bool {
    line.contains("\x1b[31m") || line.contains("\x1b[38;5;1m")
}

fn executed_by(r: &AuditRecord, env: &Env, action: &str, target: &str) -> bool {
    r.action == action
        && r.target.as_deref() == Some(target)
        && r.decision == Decision::Executed
        && r.actor.key_id.as_deref() == Some(env.key.public_base64().as_str())
}

/// Must-show 1: a background python connecting out shows in red with its argv; `k` + `y`
/// kills it (through the actuator, audited with the operator's key); `k` on pid 1 shows the
/// host's refusal on screen; the console follows a resize, quits on Escape and restores the
/// terminal, and draws no colour under NO_COLOR.
#[tokio::test]
async fn top_kills_from_a_real_terminal_and_shows_refusals() {
    let env = Env::new("top").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let key = operator_key(&env);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = marker("top");
    let mut child = beacon(&env, &tag, port);
    let pid = child.id();
    let finding = collector
        .wait_finding("script engine network", |f| {
            f.process.pid == pid && f.rule_id == NETWORK_RULE
        })
        .await;
    let exec_id = finding.process.exec_id.to_string();

    let command = format!(
        "{} top --nats {} --key {} --host {host} --refresh-secs 1",
        osprey_bin().display(),
        env.nats.url(),
        key.display(),
    );
    let term = Tmux::start(&command, 200, 50, &[("OSPREY_SESSION", "/nonexistent")]);
    let row = term
        .wait_line("the python in red with its argv", true, |l| {
            l.contains(&tag) && l.contains(&format!(" {pid} ")) && red(l)
        })
        .await;
    assert!(row.contains("HIGH") && row.contains("python3 -c"), "{row}");

    // Select it (a filter on its pid), kill it after the confirm line.
    term.keys(&["/"]);
    term.keys(&[&format!("pid:{pid}"), "Enter"]);
    term.wait_line("the filtered list", false, |l| l.contains("(1 of 1)"))
        .await;
    term.keys(&["k"]);
    term.wait_line("the confirm line naming the process", false, |l| {
        l.contains(&format!("Kill python3.11[{pid}]")) || l.contains(&format!("[{pid}] on {host}?"))
    })
    .await;
    term.keys(&["y"]);
    let answer = term
        .wait_line("the host's answer", false, |l| l.contains("executed on"))
        .await;
    assert!(
        answer.contains("kill python3") && answer.contains(&host),
        "{answer}"
    );
    let dead = eventually(Duration::from_secs(10), || {
        matches!(proc_state(pid), Some('Z') | None).then_some(())
    })
    .await;
    assert!(
        dead.is_some(),
        "/proc/{pid} shows it alive: {:?}",
        proc_state(pid)
    );
    let status = wait_exit(&mut child, Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let record = wait_audit(&env.actuator_audit(), "the kill", |r| {
        executed_by(r, &env, "kill", &exec_id)
    })
    .await;
    assert_eq!(record.pid, Some(pid));

    // The list follows: the process is gone from it.
    term.wait_line("the list without it", false, |l| l.contains("(0 of 0)"))
        .await;

    // pid 1: the host refuses, the refusal is on screen, pid 1 lives.
    term.keys(&["/"]);
    term.keys(&["BSpace"; 24]);
    term.keys(&["pid:1", "Enter"]);
    term.wait_line("pid 1 listed", false, |l| l.contains("(1 of 1)"))
        .await;
    term.keys(&["k"]);
    term.wait_line("the confirm line for pid 1", false, |l| {
        l.contains("[1] on") && l.starts_with("Kill")
    })
    .await;
    term.keys(&["y"]);
    let refusal = term
        .wait_line("the refusal", false, |l| l.contains("refused by"))
        .await;
    assert!(refusal.contains("pid 1"), "{refusal}");
    assert!(Path::new("/proc/1").exists());
    wait_audit(&env.actuator_audit(), "the refused kill of pid 1", |r| {
        r.action == "kill" && r.decision == Decision::Refused && r.pid == Some(1)
    })
    .await;

    // A resize is followed: the frame is drawn again at the new width.
    term.resize(120, 40);
    let redrawn = eventually(Duration::from_secs(10), || {
        let screen = term.screen(false);
        let first = screen.lines().next()?.to_string();
        (first.chars().count() == 120 && first.ends_with('┐')).then_some(())
    })
    .await;
    assert!(
        redrawn.is_some(),
        "not redrawn at 120 columns:\n{}",
        term.screen(false)
    );

    // Escape quits and gives the terminal back.
    term.keys(&["Escape"]);
    term.wait_line("a clean exit", false, |l| {
        l.contains("exited with status 0")
    })
    .await;
    drop(term);

    // NO_COLOR: the same console without a colour.
    let plain = Tmux::start(
        &command,
        200,
        50,
        &[("OSPREY_SESSION", "/nonexistent"), ("NO_COLOR", "1")],
    );
    plain
        .wait_line("the host", false, |l| l.contains(&host))
        .await;
    let screen = plain.screen(true);
    for line in screen.lines() {
        assert!(
            !line.contains("\x1b[38;5;")
                && !(31..=37).any(|c| line.contains(&format!("\x1b[{c}m"))),
            "a colour under NO_COLOR: {line:?}"
        );
    }
}

/// Must-show 2: `osprey ps --limit 5` prints a header and at most 5 rows; `--json` parses and
/// holds the test's process with its ExecId, CPU and RSS.
#[tokio::test]
async fn ps_prints_a_bounded_table_and_json() {
    let env = Env::new("ps").await;
    let collector = env
        .collector("resource_sample_interval_secs: 1\n", None)
        .await;
    let host = collector.host.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tag = marker("ps");
    let mut child = beacon(&env, &tag, listener.local_addr().unwrap().port());
    let finding = collector
        .wait_finding("script engine network", |f| {
            f.process.pid == child.id() && f.rule_id == NETWORK_RULE
        })
        .await;
    let url = env.nats.url();

    let out = osprey(&["ps", "--host", &host, "--limit", "5", "--nats", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("RISK") && lines[0].contains("COMMAND"),
        "{text}"
    );
    assert!(
        (2..=6).contains(&lines.len()),
        "a header and 1 to 5 rows:\n{text}"
    );
    assert!(lines[1].starts_with("HIGH"), "the riskiest first:\n{text}");

    // CPU comes from the second sample on: ask until the host has it.
    let exec_id = finding.process.exec_id.to_string();
    let process = eventually(Duration::from_secs(20), || {
        let out = osprey(&[
            "ps", "--host", &host, "--json", "--limit", "500", "--nats", &url,
        ]);
        let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        snapshot["processes"]
            .as_array()?
            .iter()
            .find(|p| p["process"]["exec_id"] == exec_id.as_str())
            .filter(|p| p["cpu_percent"].is_number())
            .cloned()
    })
    .await
    .expect("the test's process with a CPU figure in `osprey ps --json`");
    assert!(
        process["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{process}"
    );
    assert_eq!(process["risk"]["level"], "high");
    assert!(process["process"]["argv"][2]
        .as_str()
        .unwrap()
        .contains(&tag));
    assert_eq!(
        process["connections"][0]["destination_port"],
        listener.local_addr().unwrap().port()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Must-show 3: `osprey block 127.0.0.2:PORT --ttl 5s` denies a connect; `osprey unblock`
/// lets it through again; both audited with the operator's key.
#[tokio::test]
async fn block_and_unblock_from_the_command_line() {
    let env = Env::new("block").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let key = operator_key(&env);
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let destination = format!("127.0.0.2:{port}");
    let url = env.nats.url();
    let key = key.to_str().unwrap();
    assert_eq!(try_connects(&env, &[("127.0.0.2", port)]), ["ok"]);

    let out = osprey(&[
        "block",
        &destination,
        "--ttl",
        "5s",
        "--host",
        &host,
        "--nats",
        &url,
        "--key",
        key,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with(&format!("executed on {host}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        try_connects(&env, &[("127.0.0.2", port)]),
        [libc::EPERM.to_string()],
        "denied while blocked"
    );
    let out = osprey(&[
        "unblock",
        &destination,
        "--host",
        &host,
        "--nats",
        &url,
        "--key",
        key,
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(try_connects(&env, &[("127.0.0.2", port)]), ["ok"]);

    let target = format!("127.0.0.2/32 port {port}");
    for action in ["block", "unblock"] {
        wait_audit(&env.actuator_audit(), action, |r| {
            executed_by(r, &env, action, &target)
        })
        .await;
    }
}

/// Must-show 4: `osprey suspend` then `osprey resume`: /proc shows the process stopped (`T`),
/// then running again; both audited.
#[tokio::test]
async fn suspend_then_resume_from_the_command_line() {
    let env = Env::new("suspend").await;
    let collector = env.collector("", None).await;
    let host = collector.host.clone();
    let key = operator_key(&env);
    let mut child = env.spawn("/bin/sleep", &["600"]);
    let pid = child.id();
    let exec_id: ExecId = live_exec_id(&collector, pid).await;
    let id = exec_id.to_string();
    let url = env.nats.url();
    let key = key.to_str().unwrap();

    let out = osprey(&[
        "suspend", &id, "--host", &host, "--nats", &url, "--key", key,
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let stopped = eventually(Duration::from_secs(10), || {
        (proc_state(pid) == Some('T')).then_some(())
    })
    .await;
    assert!(stopped.is_some(), "state {:?}", proc_state(pid));

    let out = osprey(&["resume", &id, "--host", &host, "--nats", &url, "--key", key]);
    assert!(out.status.success(), "{}", stdout(&out));
    let running = eventually(Duration::from_secs(10), || {
        matches!(proc_state(pid), Some('S' | 'R')).then_some(())
    })
    .await;
    assert!(running.is_some(), "state {:?}", proc_state(pid));
    for action in ["suspend", "resume"] {
        wait_audit(&env.actuator_audit(), action, |r| {
            executed_by(r, &env, action, &id)
        })
        .await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Must-show 5: on the shipped NATS deployment (deploy/nats, credentials from `osprey creds`),
/// a host state query with a host's credentials is refused by the server; the same query with
/// an operator's is answered.
#[tokio::test]
async fn queries_need_operator_credentials() {
    let host = format!("e2equery{}", std::process::id());
    let deployment = Deployment::new(&[&host]);
    let nats = NatsServer::start_deployed(&deployment);
    let stack = Stack::new("query", deployment, nats.url()).await;
    let _collector = stack.collector(&host, "", &[]).await;
    let creds = |path: PathBuf| path.display().to_string();

    let operator_creds = creds(stack.deployment.operator_creds());
    let out = osprey(&[
        "ps",
        "--host",
        &host,
        "--limit",
        "3",
        "--nats",
        &stack.url,
        "--creds",
        &operator_creds,
    ]);
    assert!(
        out.status.success(),
        "operator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("RISK"), "{}", stdout(&out));

    // As the host: the server refuses the publish (a permissions violation), nothing answers.
    let as_host = stack.deployment.host(&stack.url, &host).await;
    let query = protocol::encode(&Query {
        kind: QueryKind::Processes(Default::default()),
    })
    .unwrap();
    let asked = as_host
        .client
        .send_request(
            subject::query(&host),
            async_nats::Request::new()
                .payload(query.into())
                .timeout(Some(Duration::from_secs(3))),
        )
        .await;
    assert!(asked.is_err(), "a host's query was answered");
    let violation = as_host
        .wait_error(&subject::query(&host), Duration::from_secs(10))
        .await;
    assert!(
        violation.is_some(),
        "the server reports the violation; errors: {:?}",
        as_host.errors()
    );
    let host_creds = creds(stack.deployment.host_creds(&host));
    let out = osprey(&[
        "ps",
        "--host",
        &host,
        "--nats",
        &stack.url,
        "--creds",
        &host_creds,
    ]);
    assert!(
        !out.status.success(),
        "the CLI with host credentials got an answer"
    );
}
