//! `osprey-collector`: the per-host daemon.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use collector::{
    config::{CollectorConfig, ResponseMode},
    detect::{
        heuristics::Heuristics,
        intel::IntelDetector,
        reload,
        rules::{self as detect_rules, ActiveRules},
        Detectors,
    },
    history_feed::HistoryFeed,
    pipeline::{Pipeline, PipelineOptions},
    process::ProcessTable,
    publish::{JsonlOptions, NatsConfig, Publisher, PublisherConfig, SpoolConfig},
    query::{QueryRequest, QueryServer},
    source::{EventSource, PlatformSource, SourceOptions},
};
use protocol::BootId;

const DEFAULT_CONFIG: &str = "/etc/osprey/collector.yaml";

/// Osprey's host sensor: streams process and network events from the kernel, scores them,
/// and publishes findings to NATS.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Windows: run under the Service Control Manager (the command line
    /// deploy/windows/install.ps1 registers).
    #[arg(long)]
    service: bool,
    /// Configuration file (YAML).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Host name used in subjects and findings.
    #[arg(long)]
    host: Option<String>,
    /// NATS server URL.
    #[arg(long, env = "OSPREY_NATS_URL")]
    nats: Option<String>,
    /// Don't use NATS at all (use with --output jsonl).
    #[arg(long)]
    no_nats: bool,
    /// Also print findings and events as JSON lines on stdout.
    #[arg(long, value_enum)]
    output: Option<Output>,
    /// Don't publish or print raw events, only findings and heartbeats.
    #[arg(long)]
    no_events: bool,
    /// Directory of the findings spool (used while NATS is unreachable).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Kernel ring buffer size in bytes (power of two).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// bpffs directory where enforcement is pinned across restarts.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Destination networks that count as local for the heuristics (comma-separated CIDRs;
    /// an empty string makes every destination non-local).
    #[arg(long, value_delimiter = ',')]
    local_networks: Option<Vec<String>>,
    /// Seconds between heartbeats.
    #[arg(long)]
    heartbeat_interval_secs: Option<u64>,
    /// Policy file (docs/policy.md); hot-reloaded on change and on SIGHUP.
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Sigma rule file or directory; repeat for more (replaces the config file's list).
    #[arg(long, value_name = "PATH")]
    sigma: Vec<PathBuf>,
    /// Seconds between CPU and resident-memory samples of live processes (memory rules,
    /// host state queries).
    #[arg(long, alias = "memory-sample-interval-secs")]
    resource_sample_interval_secs: Option<u64>,
    /// The history database (turns the history on: `history.path`).
    #[arg(long, value_name = "PATH", conflicts_with = "no_history")]
    history_db: Option<PathBuf>,
    /// Keep no history, baselines or anomaly scores (`history.enabled: false`).
    #[arg(long)]
    no_history: bool,
    /// One-shot (`osprey scan`): judge every running process once (rules, hash, threat
    /// intelligence, CPU and memory), print the snapshot as JSON on stdout and exit. Without
    /// NATS or history; the policy's actions are run on this host only with --apply.
    #[arg(long, help_heading = "Scan")]
    scan: bool,
    /// With --scan: run the actions the policy recommends (local response, with its safety
    /// controls and audit); without it they are decided and audited as a dry run.
    #[arg(long, requires = "scan", help_heading = "Scan")]
    apply: bool,
    /// With --scan: at most this many processes in the snapshot, riskiest first.
    #[arg(long, default_value_t = 50, requires = "scan", help_heading = "Scan")]
    limit: u32,
    /// With --scan: at most this long for every executable to be hashed before the snapshot.
    #[arg(long, default_value_t = 30, requires = "scan", help_heading = "Scan")]
    wait_secs: u64,
    /// Serve Prometheus `/metrics` on this address (`metrics_address`), e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<std::net::SocketAddr>,
    /// A file holding a public key (base64) whose signed commands the actuator obeys, on
    /// top of the configuration file's `actuator.trusted_key_files` (repeatable).
    #[arg(long, value_name = "PATH")]
    trusted_key_file: Vec<PathBuf>,
    /// Internal: hold the enforcement links of the collector using PIN_DIR across its
    /// restarts (started by the collector itself).
    #[arg(long = "hold-enforcement", hide = true, value_name = "PIN_DIR")]
    hold_enforcement: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Jsonl,
}

fn apply(args: &Args, config: &mut CollectorConfig) {
    if let Some(h) = &args.host {
        config.host = Some(h.clone());
    }
    if let Some(url) = &args.nats {
        config.nats.url = Some(url.clone());
    }
    if args.no_nats {
        config.nats.url = None;
    }
    if args.output == Some(Output::Jsonl) {
        config.output.jsonl = true;
        config.output.jsonl_events = !args.no_events;
    }
    if args.no_events {
        config.nats.publish_events = false;
        config.output.jsonl_events = false;
    }
    if let Some(dir) = &args.spool_dir {
        config.spool.dir = dir.clone();
    }
    if let Some(n) = args.ring_buffer_bytes {
        config.sensor.ring_buffer_bytes = n;
    }
    if let Some(dir) = &args.pin_dir {
        config.sensor.pin_dir = dir.clone();
    }
    if let Some(nets) = &args.local_networks {
        config.heuristics.local_networks = nets.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(s) = args.heartbeat_interval_secs {
        config.heartbeat_interval_secs = s;
    }
    if let Some(address) = args.metrics_address {
        config.metrics_address = Some(address);
    }
    if args.scan {
        // A scan reports and acts here and now: nothing is published or remembered.
        config.nats.url = None;
        config.query.enabled = false;
        config.output.jsonl = false;
        config.history.enabled = false;
        config.metrics_address = None;
        config.response.mode = ResponseMode::Local;
        config.response.dry_run |= !args.apply;
        // Its own pins, beside (never instead of) those of a collector running as a service.
        let mut pins = config.sensor.pin_dir.clone().into_os_string();
        pins.push(format!("-scan-{}", std::process::id()));
        config.sensor.pin_dir = pins.into();
    }
    if let Some(p) = &args.policy {
        config.policy = Some(p.clone());
    }
    if !args.sigma.is_empty() {
        config.sigma.clone_from(&args.sigma);
    }
    config
        .actuator
        .trusted_key_files
        .extend(args.trusted_key_file.iter().cloned());
    if let Some(s) = args.resource_sample_interval_secs {
        config.resource_sample_interval_secs = s;
    }
    if let Some(path) = &args.history_db {
        config.history.enabled = true;
        config.history.path = path.clone();
    }
    if args.no_history {
        config.history.enabled = false;
    }
}

/// How often the rule files are looked at for changes.
const RULES_POLL: Duration = Duration::from_secs(1);

/// Loads the policy and Sigma rules (a start-up with broken rules fails, naming every
/// problem), starts their hot reload, and reloads on SIGHUP.
fn start_rules(config: &CollectorConfig) -> anyhow::Result<ActiveRules> {
    let paths = detect_rules::rule_paths(config.policy.as_ref(), &config.sigma);
    let started = std::time::Instant::now();
    let engine =
        detect_rules::load(&paths).map_err(|e| anyhow::anyhow!("cannot load the rules: {e}"))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rules loaded: {}",
        detect_rules::summary(&engine)
    );
    let (engines, reload) =
        reload::start(paths, engine, RULES_POLL).context("cannot start the rules reload thread")?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the rules");
                reload.request();
            }
        });
    }
    #[cfg(not(unix))]
    std::mem::forget(reload); // file changes still reload; the thread lives as long as the process
    Ok(ActiveRules::new(engines))
}

/// Starts the actuator (Linux, `actuator.enabled`): it serves signed commands on
/// `osprey.cmd.<host>` when NATS is configured, and runs the host's own response plans with
/// `response.mode: local` (`local` receives the findings to act on).
#[cfg(target_os = "linux")]
async fn start_actuator(
    config: &CollectorConfig,
    host: &str,
    source: &mut PlatformSource,
    active_blocks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    images: collector::process::Images,
    local: Option<tokio::sync::mpsc::UnboundedReceiver<protocol::Finding>>,
) -> anyhow::Result<
    Option<(
        tokio::sync::watch::Sender<bool>,
        std::thread::JoinHandle<()>,
    )>,
> {
    use collector::actuator::{
        nats_endpoints, Actuator, ActuatorOptions, Enforcement, LocalResponse,
    };
    let url = config.nats.url.clone();
    if !config.actuator.enabled || (url.is_none() && local.is_none()) {
        return Ok(None);
    }
    let enforcement: Option<Box<dyn Enforcement>> =
        match source.take_enforcement(active_blocks.clone()) {
            Ok(e) => Some(Box::new(e)),
            Err(e) => {
                tracing::warn!("actuator: no kernel enforcement (blocks, kill-on-exec): {e}");
                None
            }
        };
    let client = match &url {
        Some(url) => Some(
            bus::options(bus::Role::Host(host), config.nats.credentials.as_deref())?
                .retry_on_initial_connect()
                .max_reconnects(None)
                .name(format!("osprey-actuator@{host}"))
                .connect(bus::servers(url))
                .await
                .context("actuator: cannot connect to NATS")?,
        ),
        None => None,
    };
    let actuator = Actuator::new(
        ActuatorOptions {
            host: host.to_string(),
            boot: boot_id(),
            section: config.actuator.clone(),
            protected_destinations: url.as_deref().map(nats_endpoints).unwrap_or_default(),
            active_blocks,
            images,
            script_engines: config.heuristics.script_engines.clone(),
            cgroup_root: collector::source::ebpf::cgroup2_root()?,
        },
        enforcement,
        client.clone(),
    )?;
    let local = local.map(|rx| {
        (
            rx,
            LocalResponse {
                dry_run: config.response.dry_run,
                ttl_secs: config.response.ttl_secs,
            },
        )
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Its own thread and runtime: actions block (dumps, copies) and must not stall the pipeline.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("actuator: cannot start its runtime")?;
    let task = std::thread::Builder::new()
        .name("osprey-actuator".into())
        .spawn(move || runtime.block_on(actuator.run(client, local, stopped)))
        .context("actuator: cannot start its thread")?;
    Ok(Some((stop, task)))
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer and its length are valid; gethostname NUL-terminates on success.
        if unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

fn boot_id() -> BootId {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|t| BootId::from_boot_id_text(&t))
        .unwrap_or(BootId(0))
}

/// What a scan gives samples, VirusTotal answers already in flight, and actions after the
/// last hash.
const SCAN_SETTLE: Duration = Duration::from_secs(1);

async fn run(args: Args, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let mut config = CollectorConfig::load(
        &args.config,
        args.config.as_path() != std::path::Path::new(DEFAULT_CONFIG),
    )?;
    apply(&args, &mut config);
    config.validate(&args.config)?;
    let host = config.host.clone().unwrap_or_else(host_name);
    let local = config
        .local_networks()
        .map_err(|e| anyhow::anyhow!("heuristics.local_networks: {e}"))?;
    let rules = start_rules(&config)?;

    // Attach the probes first: everything from here on is captured.
    #[allow(unused_mut)]
    let mut source = PlatformSource::start(&SourceOptions {
        buffer_bytes: config.sensor.ring_buffer_bytes,
        connect_outcome_wait: config.connect_outcome_wait(),
        cgroup_root: config.sensor.cgroup_root.clone(),
        pin_dir: config.sensor.pin_dir.clone(),
    })?;

    let table = ProcessTable::new(boot_id(), config.process_table.capacity);
    let active_blocks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Local response: findings go to the actuator of this host.
    let (local_tx, local_rx) = match config.response.mode {
        ResponseMode::Local => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some((tx, config.response.min_severity)), Some(rx))
        }
        ResponseMode::Responder => (None, None),
    };
    #[cfg(target_os = "linux")]
    let actuator = start_actuator(
        &config,
        &host,
        &mut source,
        active_blocks.clone(),
        table.images(),
        local_rx,
    )
    .await?;
    #[cfg(not(target_os = "linux"))]
    if local_rx.is_some() {
        anyhow::bail!("response.mode: local needs the actuator, which runs on Linux only");
    }
    let (intel, verdicts) = IntelDetector::start(
        &config.intel,
        config.intel_cache(),
        &config.heuristics.safe_paths,
    )
    .context("threat intelligence")?;
    let history = if config.history.enabled {
        Some(
            HistoryFeed::open(&config.history, &host, &config.heuristics.script_engines)
                .context("history")?,
        )
    } else {
        None
    };

    let (publisher, publisher_task) = Publisher::start(PublisherConfig {
        host: host.clone(),
        nats: config.nats.url.as_ref().map(|url| NatsConfig {
            credentials: config.nats.credentials.clone(),
            ..NatsConfig::new(url.clone())
        }),
        publish_events: config.nats.publish_events,
        jsonl: config.output.jsonl.then_some(JsonlOptions {
            events: config.output.jsonl_events,
        }),
        spool: SpoolConfig {
            dir: config.spool.dir.clone(),
            max_bytes: config.spool.max_bytes,
            max_findings: config.spool.max_findings,
            fsync: config.spool.fsync,
        },
    })
    .await
    .context("cannot start the publisher")?;

    if let Some(address) = config.metrics_address {
        metrics::spawn(address, collector::metrics::get().registry())
            .await
            .context("cannot serve /metrics")?;
    }

    let query_server = match config.nats.url.as_ref().filter(|_| config.query.enabled) {
        Some(url) => Some(
            QueryServer::start(url, config.nats.credentials.as_ref(), &host)
                .await
                .context("cannot start the host state query server")?,
        ),
        None => None,
    };
    let (mut queries, query_task) = match query_server {
        Some(server) => (Some(server.requests), Some(server.task)),
        None => (None, None),
    };
    // A scan asks its own pipeline for the snapshot.
    let scan_queries = if args.scan {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        queries = Some(rx);
        Some(tx)
    } else {
        None
    };

    let mut pipeline = Pipeline::new(
        PipelineOptions {
            host: host.clone(),
            heartbeat_interval: Duration::from_secs(config.heartbeat_interval_secs),
            reconcile_interval: Duration::from_secs(
                config.process_table.reconcile_interval_secs.max(1),
            ),
            resource_sample_interval: config.resource_sample_interval(),
            queries,
            tracked_processes: config.query.tracked_processes,
            active_blocks,
            local_response: local_tx,
            verdicts,
            history,
            audit_file: Some(config.actuator.audit_file.clone()),
        },
        source,
        table,
        Detectors::new(
            Heuristics::new(&config.heuristics, local),
            rules,
            Some(intel),
        ),
        publisher,
    )?;
    tracing::info!(host, nats = ?config.nats.url, "osprey-collector running");
    let (result, scanned) = match scan_queries {
        Some(asks) => {
            pipeline.scan_existing();
            let hash_queue = pipeline.hash_queue();
            let snapshot = std::sync::Arc::new(std::sync::Mutex::new(None));
            let taken = snapshot.clone();
            let limit = args.limit.max(1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
            let scanned = async move {
                // Every executable hashed (and so judged by the feeds and the policy), or the
                // deadline; then a moment for samples, verdicts and actions to land.
                while hash_queue.load(std::sync::atomic::Ordering::Relaxed) > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(SCAN_SETTLE).await;
                let (reply, answer) = tokio::sync::oneshot::channel();
                let query = protocol::Query {
                    kind: protocol::QueryKind::Processes(protocol::ProcessFilter {
                        limit,
                        ..Default::default()
                    }),
                };
                if asks.send(QueryRequest { query, reply }).await.is_ok() {
                    if let (Ok(answer), Ok(mut slot)) = (answer.await, taken.lock()) {
                        *slot = Some(answer);
                    }
                }
            };
            let result = tokio::select! {
                result = pipeline.run(scanned) => result,
                () = shutdown => Ok(()),
            };
            let snapshot = snapshot.lock().ok().and_then(|mut s| s.take());
            (result, Some(snapshot))
        }
        None => (pipeline.run(shutdown).await, None),
    };
    if let Some(task) = query_task {
        task.abort();
    }
    #[cfg(target_os = "linux")]
    if let Some((stop, task)) = actuator {
        let _ = stop.send(true);
        let _ = tokio::task::spawn_blocking(move || task.join()).await;
    }
    let stats = publisher_task.shutdown(Duration::from_secs(3)).await;
    tracing::info!(spool_depth = stats.spool_depth, "osprey-collector stopped");
    result?;
    match scanned {
        Some(Some(snapshot)) => println!("{}", serde_json::to_string(&snapshot)?),
        Some(None) => anyhow::bail!("the scan was stopped before its snapshot was taken"),
        None => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    #[cfg(target_os = "linux")]
    if args.hold_enforcement.is_some() {
        collector::source::ebpf::hold_forever();
    }
    service::init_logs();
    service::exit(if args.service {
        run_as_service(args)
    } else {
        run_in_console(args)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the pipeline is sequential, and waking a second worker for every hand-off
    // (pipeline → publisher → NATS connection) cost more CPU than the work itself.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_in_console(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(run(args, service::shutdown_signal()))
}

#[cfg(windows)]
fn run_as_service(args: Args) -> anyhow::Result<()> {
    collector::service::run_service(move |stop| runtime()?.block_on(run(args, stop.requested())))?;
    Ok(())
}

#[cfg(not(windows))]
fn run_as_service(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("--service runs the collector under the Windows Service Control Manager; on Linux use the systemd unit in deploy/systemd/")
}
