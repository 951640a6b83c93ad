//! `osprey-console` under test: started on a free loopback port with a given configuration,
//! killable and restartable on the same port and database; and a small HTTP client for its API.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub struct Console {
    config: PathBuf,
    /// The configuration has a certificate: the console speaks HTTPS only.
    tls: bool,
    runs: usize,
    pub port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Console {
    /// Starts the console with `config` and waits until it answers HTTP.
    pub fn start(config: &Path) -> Console {
        Self::start_with(config, false)
    }

    /// Starts the console with a configuration that has `tls`; waits until it serves HTTPS.
    pub fn start_tls(config: &Path) -> Console {
        Self::start_with(config, true)
    }

    fn start_with(config: &Path, tls: bool) -> Console {
        let mut console = Console {
            config: config.to_path_buf(),
            tls,
            runs: 0,
            port: crate::nats::free_port(),
            child: None,
            log: Arc::default(),
        };
        console.run();
        console
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts (again) on the same port and database.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "osprey-console is already running");
        let mut child = Command::new(crate::bin_dir().join("osprey-console"))
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("osprey-console is built (cargo build --workspace --bins)");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[console] {line}");
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let started = Instant::now();
        let http = Http::new(&self.url());
        self.runs += 1;
        // Over TLS: once it says it serves (this run's line); over HTTP: once the page answers.
        let ready = |console: &Console| match console.tls {
            true => console.log_lines("osprey-console on https://").len() >= console.runs,
            false => http.get("/", &[]).0 == 200,
        };
        while !ready(self) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "osprey-console exited ({status}):\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "osprey-console did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// The console's stderr lines so far that contain `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking HTTP client for the console's API: answers are (status, headers, body) whatever
/// the status.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

pub type Answer = (u16, Vec<(String, String)>, String);

impl Http {
    pub fn new(base: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http {
            agent,
            base: base.to_string(),
        }
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        match response {
            Ok(mut r) => {
                let headers = r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = r.body_mut().read_to_string().unwrap_or_default();
                (r.status().as_u16(), headers, body)
            }
            Err(_) => (0, Vec::new(), String::new()),
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::answer(request.call())
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], json: &str) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::answer(request.send(json))
    }
}

/// A header's value in an [`Answer`].
pub fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer
        .1
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
