//! A real nats-server with JetStream for tests: a free loopback port, a temporary store
//! directory, killed (and its directory removed) on drop. Shared by the end-to-end tests,
//! the benchmark and the collector's publisher tests.
//!
//! The binary is `$OSPREY_NATS_SERVER`, else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server` (Debian's package).

use std::{
    env, fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const READY_WITHIN: Duration = Duration::from_secs(20);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    root: PathBuf,
    child: Option<Child>,
    /// A configuration file (users, permissions), when the test gave one.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Chooses a free port and a fresh store directory without starting the server, for tests
    /// that need its URL while it is still down.
    pub fn prepare() -> NatsServer {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let root = env::temp_dir().join(format!(
            "osprey-nats-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(root.join("store")).expect("create the nats-server store directory");
        NatsServer {
            binary: find_binary(),
            port: free_port(),
            root,
            child: None,
            config: None,
        }
    }

    /// Prepares and starts a server.
    pub fn start() -> NatsServer {
        let mut server = NatsServer::prepare();
        server.run();
        server
    }

    /// Starts a server with this configuration (e.g. `authorization { users: [...] }`); the
    /// port, address and store directory stay the harness's.
    pub fn start_with_config(config: &str) -> NatsServer {
        let mut server = NatsServer::prepare();
        let path = server.root.join("server.conf");
        fs::write(&path, config).expect("write the nats-server configuration");
        server.config = Some(path);
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client of this server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    pub fn port(&self) -> u16 {
        self.port
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
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
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

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
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
        // 4222 may belong to a system nats-server.
        if port != 4222 {
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
