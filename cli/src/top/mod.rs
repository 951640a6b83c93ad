//! `osprey top`: a live terminal console (ratatui + crossterm) over the bus — hosts from
//! heartbeats, the selected host's processes at risk (host state queries, refreshed, and
//! re-asked when its events or findings say the list moved), the findings stream (with the AI
//! investigator's verdicts, when one runs), pending approvals from the audit trail, a detail
//! view, and a kill switch.
//!
//! Two halves: async tasks on the runtime read NATS and carry out requests (queries,
//! signed commands, approvals), and a blocking UI loop owns the terminal. They talk over
//! channels: the UI never waits on the network, and at thousands of events per second it
//! still draws at most [`MAX_FPS`] frames a second. Messages the UI could not take in are
//! counted and shown, not silently lost.

mod state;
mod ui;

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use protocol::{
    signing::KeyPair, subject, EventKind, Finding, Heartbeat, Investigation, ProcessFilter, Query,
    QueryKind,
};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use self::state::{App, Key, Request, Update};
use crate::{
    audit,
    operator::{KeyArgs, NatsArgs},
    render,
};

/// How long an approval waits for a responder to listen.
const APPROVAL_WAIT: Duration = Duration::from_secs(5);

/// Most frames drawn per second (a key press is drawn at once).
const MAX_FPS: u64 = 20;
/// Updates waiting for the UI before new ones are skipped (and counted).
const UPDATE_QUEUE: usize = 8192;
/// How soon a list the events say moved is asked for again.
const STALE_REFRESH: Duration = Duration::from_millis(700);

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Start with this host selected (default: the first one heard of).
    #[arg(long)]
    pub host: Option<String>,
    /// Seconds between refreshes of the process list (it is also refreshed when the host's
    /// events or findings show it moved).
    #[arg(long, default_value_t = 2)]
    pub refresh_secs: u64,
    /// Write frame statistics here when quitting (JSON), for `cargo xtask bench`.
    #[arg(long, hide = true, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        std::io::stdout().is_terminal(),
        "osprey top draws on a terminal; for a one-shot table use `osprey ps`"
    );
    let key = args.key.load().map(Arc::new).map_err(|e| format!("{e:#}"));
    let client = args.nats.connect("osprey-top", true).await?;
    let (updates_tx, updates) = mpsc::channel(UPDATE_QUEUE);
    let skipped = Arc::new(AtomicU64::new(0));
    let feed = Feed {
        tx: updates_tx,
        skipped: skipped.clone(),
    };
    let quit = Arc::new(AtomicBool::new(false));
    watch_signals(quit.clone());

    spawn_intake(&client, &feed).await?;
    let (requests, requests_rx) = mpsc::unbounded_channel();
    tokio::spawn(serve_requests(
        client.clone(),
        key.as_ref().ok().cloned(),
        requests_rx,
        feed.clone(),
    ));

    let mut app = App::new(args.host.clone(), key.map(|_| ()));
    // What the trail on this machine already says (pending approvals, past actions).
    let now = Instant::now();
    for r in audit::read_files(&[]).unwrap_or_default() {
        app.apply(Update::Audit(Box::new(r)), now);
    }
    let refresh = Duration::from_secs(args.refresh_secs.max(1));
    let stats = tokio::task::spawn_blocking(move || {
        ui_loop(app, updates, requests, skipped, quit, refresh)
    })
    .await??;
    if let Some(path) = &args.stats_file {
        std::fs::write(path, serde_json::to_vec_pretty(&stats.summary())?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands updates to the UI without ever waiting: what does not fit is counted.
#[derive(Clone)]
struct Feed {
    tx: mpsc::Sender<Update>,
    skipped: Arc<AtomicU64>,
}

impl Feed {
    fn send(&self, update: Update) {
        if self.tx.try_send(update).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn watch_signals(quit: Arc<AtomicBool>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        quit.store(true, Ordering::SeqCst);
        // The drawing loop quits within a frame; a terminal that hung up can leave it stuck
        // in a read, so the process ends anyway.
        tokio::time::sleep(Duration::from_secs(2)).await;
        ratatui::restore();
        std::process::exit(0);
    });
    #[cfg(not(unix))]
    let _ = quit;
}

/// Heartbeats, findings and audit records of every host, as they are published.
async fn spawn_intake(client: &async_nats::Client, feed: &Feed) -> anyhow::Result<()> {
    let mut heartbeats = client.subscribe(subject::HEARTBEAT_WILDCARD).await?;
    let mut findings = client.subscribe(subject::FINDINGS_WILDCARD).await?;
    let mut trail = audit::subscribe(client).await?;
    let mut investigations = client
        .subscribe(format!("{}.>", subject::INVESTIGATIONS))
        .await?;
    let feed = feed.clone();
    tokio::spawn(async move {
        loop {
            let update = tokio::select! {
                Some(m) = heartbeats.next() => protocol::decode::<Heartbeat>(&m.payload).ok().map(|hb| Update::Heartbeat(Box::new(hb))),
                Some(m) = findings.next() => protocol::decode::<Finding>(&m.payload).ok().map(|f| Update::Finding(Box::new(f))),
                Some(r) = trail.next() => Some(Update::Audit(Box::new(r))),
                Some(m) = investigations.next() => protocol::decode::<Investigation>(&m.payload).ok().map(|i| Update::Investigation(Box::new(i))),
                else => break,
            };
            if let Some(update) = update {
                feed.send(update);
            }
        }
    });
    Ok(())
}

/// Carries out the UI's requests, each in a task of its own (a slow host never holds up
/// another answer), and follows the selected host's events.
async fn serve_requests(
    client: async_nats::Client,
    key: Option<Arc<KeyPair>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    feed: Feed,
) {
    let mut watching: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(request) = requests.recv().await {
        let (client, feed) = (client.clone(), feed.clone());
        match request {
            Request::Watch { host } => {
                if let Some(previous) = watching.take() {
                    previous.abort();
                }
                watching = Some(tokio::spawn(follow_events(client, host, feed)));
            }
            Request::Refresh {
                host,
                min_risk,
                pid,
                text,
            } => {
                tokio::spawn(async move {
                    let query = Query {
                        kind: QueryKind::Processes(ProcessFilter {
                            min_risk,
                            pid,
                            text,
                            limit: protocol::query::MAX_PAGE,
                            ..Default::default()
                        }),
                    };
                    let result = client::query(&client, &host, &query, client::QUERY_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string());
                    feed.send(Update::Processes { host, result });
                });
            }
            Request::Detail { host, exec_id } => {
                tokio::spawn(async move {
                    let query = Query {
                        kind: QueryKind::Process { exec_id },
                    };
                    let result = client::query(&client, &host, &query, client::QUERY_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string());
                    feed.send(Update::Detail { exec_id, result });
                });
            }
            Request::Command { host, action, what } => {
                let Some(key) = key.clone() else { continue };
                tokio::spawn(async move {
                    let result = crate::operator::command(&client, &key, &host, action)
                        .await
                        .map_err(|e| e.to_string());
                    feed.send(Update::ActionDone { what, result });
                });
            }
            Request::Approval {
                pending_id,
                verdict,
            } => {
                let Some(key) = key.clone() else { continue };
                tokio::spawn(async move {
                    let result = client::send_approval(
                        &client,
                        &KeyArgs::operator(&key),
                        &pending_id,
                        verdict,
                        APPROVAL_WAIT,
                    )
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|answer| {
                        if answer.carried_out() {
                            Ok(())
                        } else {
                            Err(answer.text)
                        }
                    });
                    let what = format!("{verdict:?} {pending_id}").to_lowercase();
                    feed.send(Update::ApprovalSent { what, result });
                });
            }
        }
    }
}

/// The selected host's exec, exit and connect events (forks change nothing shown).
async fn follow_events(client: async_nats::Client, host: String, feed: Feed) {
    let mut subs = Vec::new();
    for kind in [EventKind::Exec, EventKind::Exit, EventKind::Connect] {
        match client.subscribe(subject::events(&host, kind)).await {
            Ok(s) => subs.push(s),
            Err(e) => feed.send(Update::Notice(format!(
                "cannot follow {host}'s events: {e}"
            ))),
        }
    }
    let mut all = futures::stream::select_all(subs);
    while let Some(m) = all.next().await {
        if let Ok(e) = protocol::decode(&m.payload) {
            feed.send(Update::Event(Box::new(e)));
        }
    }
}

fn key_of(k: event::KeyEvent) -> Option<Key> {
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        _ => return None,
    })
}

/// Frame statistics (`--stats-file`).
#[derive(Default)]
struct Stats {
    draw_us: Vec<u64>,
    updates: u64,
    events: u64,
    skipped: u64,
}

impl Stats {
    fn summary(&self) -> serde_json::Value {
        let mut sorted = self.draw_us.clone();
        sorted.sort_unstable();
        let at = |p: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        serde_json::json!({
            "frames": sorted.len(),
            "draw_ms_p50": at(0.5),
            "draw_ms_p99": at(0.99),
            "draw_ms_max": at(1.0),
            "updates": self.updates,
            "events": self.events,
            "skipped": self.skipped,
        })
    }
}

fn ui_loop(
    mut app: App,
    mut updates: mpsc::Receiver<Update>,
    requests: mpsc::UnboundedSender<Request>,
    skipped: Arc<AtomicU64>,
    quit: Arc<AtomicBool>,
    refresh: Duration,
) -> anyhow::Result<Stats> {
    let theme = ui::Theme {
        colour: render::colour_wanted(true),
    };
    let mut terminal = ratatui::try_init()?;
    let mut stats = Stats::default();
    let send = |r: Vec<Request>| {
        for r in r {
            let _ = requests.send(r);
        }
    };
    let frame_gap = Duration::from_millis(1000 / MAX_FPS);
    let mut last_draw = Instant::now() - frame_gap;
    let mut last_refresh = Instant::now();
    let mut last_detail = Instant::now();
    let mut dirty = true;
    let result = loop {
        if app.quit || quit.load(Ordering::SeqCst) {
            break Ok(());
        }
        let now = Instant::now();
        // Take in what arrived, a bounded amount per turn so keys stay quick.
        for _ in 0..UPDATE_QUEUE {
            let Ok(update) = updates.try_recv() else {
                break;
            };
            stats.updates += 1;
            match &update {
                Update::Event(_) => stats.events += 1,
                _ => dirty = true,
            }
            let asked = app.apply(update, now);
            if !asked.is_empty() {
                last_refresh = now;
            }
            send(asked);
        }
        app.skipped = skipped.load(Ordering::Relaxed);
        stats.skipped = app.skipped;
        let due = now.duration_since(last_refresh) >= refresh
            || (app.stale && now.duration_since(last_refresh) >= STALE_REFRESH);
        if due {
            if let Some(r) = app.refresh_request() {
                send(vec![r]);
                app.stale = false;
                last_refresh = now;
            }
        }
        if let (Some(Ok(p)), Some(host)) = (&app.detail, &app.host) {
            if now.duration_since(last_detail) >= refresh {
                send(vec![Request::Detail {
                    host: host.clone(),
                    exec_id: p.process.exec_id,
                }]);
                last_detail = now;
            }
        }
        if dirty && now.duration_since(last_draw) >= frame_gap
            || now.duration_since(last_draw) >= Duration::from_secs(1)
        {
            let started = Instant::now();
            if let Err(e) = terminal.draw(|f| ui::draw(f, &app, &theme)) {
                break Err(e.into());
            }
            stats.draw_us.push(started.elapsed().as_micros() as u64);
            last_draw = Instant::now();
            dirty = false;
        }
        // Wait for a key until the next frame is due.
        match event::poll(frame_gap) {
            Ok(true) => match event::read() {
                Ok(TermEvent::Key(k)) => {
                    if let Some(key) = key_of(k) {
                        let asked = app.key(key, Instant::now());
                        if asked.iter().any(|r| matches!(r, Request::Detail { .. })) {
                            last_detail = Instant::now();
                        }
                        send(asked);
                        // Drawn at once: the operator sees the answer to a key now.
                        last_draw = Instant::now() - frame_gap;
                        dirty = true;
                    }
                }
                Ok(TermEvent::Resize(..)) => {
                    last_draw = Instant::now() - frame_gap;
                    dirty = true;
                }
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.into()),
        }
    };
    ratatui::restore();
    result.map(|()| stats)
}
