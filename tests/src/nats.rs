//! Real nats-servers for tests: a free loopback port, a temporary store directory, killed
//! (and its directory removed) on drop. Shared by the end-to-end tests, the benchmark and the
//! collector's publisher tests.
//!
//! - [`NatsServer::start`]: a plain server (`-js`, no authentication).
//! - [`Deployment`] + [`NatsServer::start_deployed`]: the shipped deployment —
//!   `deploy/nats/nats-server.conf` with credentials issued by the real `osprey creds` into
//!   `users.conf` beside it. Addresses come from flags; the `store_dir` line, which no flag
//!   may override, is the one line changed (to the test's own store).
//! - [`NatsCluster::start`]: `deploy/nats/cluster/nats-server.conf` the same way on N nodes,
//!   routed on loopback (routes from flags), each with its own store.
//!
//! The binary is `$OSPREY_NATS_SERVER`, else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server` (Debian's package).

use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const READY_WITHIN: Duration = Duration::from_secs(20);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    root: PathBuf,
    /// Arguments besides the address and port (`-js -sd <store>`, or `-c <config>` and
    /// cluster flags).
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    name: String,
    child: Option<Child>,
}

/// A directory unique to this process and call.
fn unique_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = env::temp_dir().join(format!(
        "osprey-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// How a server is configured.
enum Config<'a> {
    /// `-js`, no configuration file.
    Plain,
    /// A shipped configuration (path from the workspace root), copied into the deployment
    /// with this server's store, plus extra flags.
    Shipped {
        deployment: &'a Deployment,
        shipped: &'a str,
        flags: Vec<OsString>,
    },
}

impl NatsServer {
    fn prepared(config: Config<'_>, env: Vec<(String, String)>, name: String) -> NatsServer {
        let root = unique_dir("nats");
        let store = root.join("store");
        fs::create_dir_all(&store).expect("create the nats-server store directory");
        let args = match config {
            Config::Plain => vec!["-js".into(), "-sd".into(), store.into()],
            Config::Shipped {
                deployment,
                shipped,
                flags,
            } => {
                let file = deployment.config(shipped, &name, &store);
                let mut args: Vec<OsString> = vec!["-c".into(), file.into()];
                args.extend(flags);
                args
            }
        };
        NatsServer {
            binary: find_binary(),
            port: free_port(),
            root,
            args,
            env,
            name,
            child: None,
        }
    }

    /// Chooses a free port and a fresh store directory without starting the server, for tests
    /// that need its URL while it is still down.
    pub fn prepare() -> NatsServer {
        Self::prepared(Config::Plain, Vec::new(), String::new())
    }

    /// Prepares and starts a server.
    pub fn start() -> NatsServer {
        let mut server = NatsServer::prepare();
        server.run();
        server
    }

    /// The shipped single-server configuration with `deployment`'s credentials, not started.
    pub fn prepare_deployed(deployment: &Deployment) -> NatsServer {
        Self::prepared(
            Config::Shipped {
                deployment,
                shipped: "deploy/nats/nats-server.conf",
                flags: Vec::new(),
            },
            Vec::new(),
            String::new(),
        )
    }

    /// The shipped single-server configuration with `deployment`'s credentials, started.
    pub fn start_deployed(deployment: &Deployment) -> NatsServer {
        let mut server = NatsServer::prepare_deployed(deployment);
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client of this server (no credentials: for plain servers).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server name (cluster nodes; empty for a lone server).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server (again) on the same port and store, and returns once it accepts
    /// clients. Panics with the server's log if it does not come up.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = self.log_path();
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the nats-server log");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Kills the server abruptly (SIGKILL), as a crash would; the store is kept for
    /// [`NatsServer::run`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server's process (SIGSTOP) until [`NatsServer::resume`]: a server too busy
    /// to read, as far as its clients can tell.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("nats-server.log")
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "nats-server exited ({status}) before accepting clients:\n{}",
                        self.log()
                    );
                }
            }
            if greets_like_nats(&address) {
                return;
            }
            if started.elapsed() > READY_WITHIN {
                panic!(
                    "nats-server did not accept clients on {address} within {READY_WITHIN:?}:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The credentials of a deployment, issued with the real `osprey creds` (so the tests check
/// the documented procedure too): the responder, one operator and the given hosts. The
/// shipped server configurations are copied verbatim beside the generated `users.conf`.
pub struct Deployment {
    dir: PathBuf,
}

/// The operator every deployment has.
pub const OPERATOR: &str = "e2e-operator";

impl Deployment {
    pub fn new(hosts: &[&str]) -> Deployment {
        let dir = unique_dir("deploy");
        let deployment = Deployment { dir };
        deployment.creds(&["responder"]);
        deployment.creds(&["operator", OPERATOR]);
        for host in hosts {
            deployment.add_host(host);
        }
        deployment
    }

    /// Issues a host's key (a running server needs a reload to see it: add hosts first).
    pub fn add_host(&self, host: &str) {
        self.creds(&["host", host]);
    }

    fn creds(&self, who: &[&str]) {
        let osprey = crate::bin_dir().join("osprey");
        let output = Command::new(&osprey)
            .arg("creds")
            .args(who)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {} (cargo build --bins): {e}", osprey.display())
            });
        assert!(
            output.status.success(),
            "osprey creds {who:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Copies a shipped server configuration (path from the workspace root) into the
    /// deployment (beside users.conf), with `store` as its JetStream store: the one line that
    /// differs.
    fn config(&self, shipped: &str, server: &str, store: &Path) -> PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(shipped);
        let text = fs::read_to_string(&from)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
        let mut replaced = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("store_dir:") {
                    replaced += 1;
                    format!("  store_dir: \"{}\"", store.display())
                } else {
                    line.to_string()
                }
            })
            .collect();
        assert_eq!(replaced, 1, "{shipped} must set store_dir exactly once");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let to = self.dir.join(format!(
            "server-{server}-{}.conf",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&to, lines.join("\n") + "\n").expect("write the server configuration");
        to
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A host's NKey seed file.
    pub fn host_creds(&self, host: &str) -> PathBuf {
        self.seed(&format!("host-{}", protocol::subject::host_token(host)))
    }

    pub fn responder_creds(&self) -> PathBuf {
        self.seed("responder")
    }

    /// Issues the AI investigator's key (before the server starts, like hosts').
    pub fn add_investigator(&self) {
        self.creds(&["investigator"]);
    }

    pub fn investigator_creds(&self) -> PathBuf {
        self.seed("investigator")
    }

    pub fn operator_creds(&self) -> PathBuf {
        self.seed(&format!(
            "operator-{}",
            protocol::subject::host_token(OPERATOR)
        ))
    }

    fn seed(&self, stem: &str) -> PathBuf {
        let path = self.dir.join("keys").join(format!("{stem}.nk"));
        assert!(path.exists(), "no credentials {}", path.display());
        path
    }

    /// A client connected as an operator.
    pub async fn operator(&self, url: &str) -> BusClient {
        BusClient::connect(url, bus::Role::Operator, &self.operator_creds()).await
    }

    /// A client connected with a host's credentials.
    pub async fn host(&self, url: &str, host: &str) -> BusClient {
        BusClient::connect(url, bus::Role::Host(host), &self.host_creds(host)).await
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A client with the errors the server sent it (permissions violations are reported that
/// way, asynchronously).
pub struct BusClient {
    pub client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl BusClient {
    pub async fn connect(url: &str, role: bus::Role<'_>, creds: &Path) -> BusClient {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let client = bus::options(role, Some(creds))
            .expect("credentials load")
            .max_reconnects(None)
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(bus::servers(url))
            .await
            .unwrap_or_else(|e| panic!("connect to {url} as {role:?}: {e}"));
        BusClient { client, errors }
    }

    /// Waits for a server error mentioning `needle` (case-insensitive).
    pub async fn wait_error(&self, needle: &str, within: Duration) -> Option<String> {
        let needle = needle.to_lowercase();
        crate::eventually(within, || {
            self.errors
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.to_lowercase().contains(&needle))
                .cloned()
        })
        .await
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// The shipped cluster configuration on `size` nodes on loopback (`osprey-1` ...), each with
/// its own store; routes and addresses come from flags, the node name from the environment
/// (`NATS_SERVER_NAME`), as the configuration documents.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(deployment: &Deployment, size: usize) -> NatsCluster {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, route_port)| {
                let name = format!("osprey-{}", i + 1);
                NatsServer::prepared(
                    Config::Shipped {
                        deployment,
                        shipped: "deploy/nats/cluster/nats-server.conf",
                        flags: vec![
                            "--cluster".into(),
                            format!("nats://127.0.0.1:{route_port}").into(),
                            "--routes".into(),
                            routes.clone().into(),
                        ],
                    },
                    vec![("NATS_SERVER_NAME".to_string(), name.clone())],
                    name,
                )
            })
            .collect();
        for node in &mut nodes {
            node.run();
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated (as the collector and responder take them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect()
    }
}

/// A NATS server greets every client with an `INFO {...}` line.
fn greets_like_nats(address: &SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(address, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// A free loopback port (never 4222, which may belong to a system nats-server).
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener
            .local_addr()
            .expect("local address of a bound socket")
            .port();
        // 4222 and 6222 may belong to a system nats-server.
        if port != 4222 && port != 6222 {
            return port;
        }
    }
}

fn find_binary() -> PathBuf {
    if let Some(path) = env::var_os("OSPREY_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    let fallbacks = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from);
    on_path
        .chain(fallbacks)
        .find(|path| is_file(path))
        .expect("nats-server not found: install it (apt-get install -y nats-server) or set OSPREY_NATS_SERVER")
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}
