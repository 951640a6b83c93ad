//! A VirusTotal API v3 stand-in on a loopback port: VirusTotal cannot be reached from these
//! machines, so the intel tests talk to this instead. It serves file objects for the hashes
//! it is told about (404 for others), 429 or 5xx on demand, accepts uploads and serves their
//! analyses, checks the `x-apikey` header, and records every exchange (request and response)
//! for the tests to assert on. It can be stopped and started again on the same port.
//!
//! One connection at a time, one request per connection (`Connection: close`): plain and
//! deterministic, which is all a test needs.

use std::{
    collections::{HashMap, VecDeque},
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// Engine counts of a file object's `last_analysis_stats` (or an analysis' `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounts {
    pub malicious: u32,
    pub suspicious: u32,
    pub harmless: u32,
    pub undetected: u32,
}

impl EngineCounts {
    pub fn malicious(malicious: u32) -> Self {
        EngineCounts {
            malicious,
            suspicious: 0,
            harmless: 0,
            undetected: 70 - malicious.min(70),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "harmless": self.harmless,
            "type-unsupported": 3,
            "suspicious": self.suspicious,
            "confirmed-timeout": 0,
            "timeout": 0,
            "failure": 0,
            "malicious": self.malicious,
            "undetected": self.undetected,
        })
    }
}

/// One request the stand-in received and what it answered.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// When the request was read in full.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer forced on the next request, whatever it asks.
#[derive(Clone, Copy, Debug)]
enum Forced {
    RateLimited { retry_after: Option<u64> },
    Status(u16),
}

struct Analysis {
    sha256: String,
    polls_left: u32,
}

#[derive(Default)]
struct State {
    api_key: String,
    files: HashMap<String, EngineCounts>,
    forced: VecDeque<Forced>,
    analyses: HashMap<String, Analysis>,
    /// What the analysis of an upload reports, after how many polls answered "queued".
    upload_counts: EngineCounts,
    upload_polls: u32,
    exchanges: Vec<Exchange>,
}

pub struct VirusTotalStandIn {
    port: u16,
    state: Arc<Mutex<State>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl VirusTotalStandIn {
    /// Starts on a free loopback port; requests must carry `api_key` in `x-apikey`.
    pub fn start(api_key: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        let mut stand_in = VirusTotalStandIn {
            port,
            state: Arc::new(Mutex::new(State {
                api_key: api_key.to_string(),
                ..State::default()
            })),
            running: None,
        };
        stand_in.serve(listener);
        stand_in
    }

    /// `http://127.0.0.1:<port>`, for `virustotal.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve a file object with these counts for `sha256` (hex, any case).
    pub fn know_file(&self, sha256: &str, counts: EngineCounts) {
        self.state()
            .files
            .insert(sha256.to_ascii_lowercase(), counts);
    }

    /// The next `n` requests get HTTP 429, with `Retry-After: <secs>` when given.
    pub fn rate_limit_next(&self, n: usize, retry_after: Option<u64>) {
        let mut state = self.state();
        for _ in 0..n {
            state.forced.push_back(Forced::RateLimited { retry_after });
        }
    }

    /// The next `n` requests get HTTP `status` (a 5xx, say).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut state = self.state();
        for _ in 0..n {
            state.forced.push_back(Forced::Status(status));
        }
    }

    /// Analyses of uploads answer "queued" `polls` times, then "completed" with `counts`
    /// (and the file becomes known with them).
    pub fn analyses_complete_after(&self, polls: u32, counts: EngineCounts) {
        let mut state = self.state();
        state.upload_polls = polls;
        state.upload_counts = counts;
    }

    /// Every exchange so far, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state().exchanges.clone()
    }

    /// Exchanges whose method is `method` and whose path starts with `prefix`.
    pub fn requests(&self, method: &str, prefix: &str) -> Vec<Exchange> {
        self.state()
            .exchanges
            .iter()
            .filter(|e| e.method == method && e.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops listening: connections are refused until [`VirusTotalStandIn::run`].
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            // Wake the accept call.
            let _ = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_secs(1),
            );
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn run(&mut self) {
        assert!(self.running.is_none(), "the stand-in is already running");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{} again: {e}", self.port));
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::clone(&self.state);
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("vt-stand-in".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        handle(stream, &state);
                    }
                }
            })
            .expect("start the stand-in thread");
        self.running = Some((stop, thread));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for VirusTotalStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request as a loopback stand-in reads it (also the LLM stand-in's).
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let at = Instant::now();
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let (status, headers, body) = respond(&mut state, &request);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    state.exchanges.push(Exchange {
        at,
        method: request.method,
        path: request.path,
        headers: request.headers,
        body: request.body,
        status,
        response_headers: headers,
        response_body: body,
    });
}

pub(crate) fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

type Response = (u16, Vec<(String, String)>, String);

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, Vec::new(), body.to_string())
}

fn respond(state: &mut State, request: &Request) -> Response {
    let key = request
        .headers
        .iter()
        .find(|(n, _)| n == "x-apikey")
        .map(|(_, v)| v.as_str());
    if key != Some(state.api_key.as_str()) {
        return error(401, "WrongCredentialsError", "Wrong API key");
    }
    match state.forced.pop_front() {
        Some(Forced::RateLimited { retry_after }) => {
            let (status, _, body) = error(429, "QuotaExceededError", "Quota exceeded");
            let headers = retry_after
                .map(|s| vec![("Retry-After".to_string(), s.to_string())])
                .unwrap_or_default();
            return (status, headers, body);
        }
        Some(Forced::Status(status)) => return error(status, "TransientError", "Try again"),
        None => {}
    }
    let path = request.path.as_str();
    if let Some(sha256) = path.strip_prefix("/api/v3/files/") {
        if request.method != "GET" {
            return error(405, "MethodNotAllowed", "GET only");
        }
        return match state.files.get(&sha256.to_ascii_lowercase()) {
            Some(counts) => file_object(sha256, counts),
            None => error(
                404,
                "NotFoundError",
                &format!("File \"{sha256}\" not found"),
            ),
        };
    }
    if path == "/api/v3/files" && request.method == "POST" {
        let Some(content) = multipart_file(request) else {
            return error(400, "BadRequestError", "no file part");
        };
        let sha256 = format!("{:x}", Sha256::digest(&content));
        let id = format!("analysis-{}-{}", &sha256[..16], state.analyses.len());
        state.analyses.insert(
            id.clone(),
            Analysis {
                sha256,
                polls_left: state.upload_polls,
            },
        );
        let body = serde_json::json!({"data": {"type": "analysis", "id": id}});
        return (200, Vec::new(), body.to_string());
    }
    if let Some(id) = path.strip_prefix("/api/v3/analyses/") {
        let counts = state.upload_counts;
        let Some(analysis) = state.analyses.get_mut(id) else {
            return error(404, "NotFoundError", "no such analysis");
        };
        let status = if analysis.polls_left > 0 {
            analysis.polls_left -= 1;
            "queued"
        } else {
            "completed"
        };
        let sha256 = analysis.sha256.clone();
        if status == "completed" {
            state.files.insert(sha256.clone(), counts);
        }
        let body = serde_json::json!({"data": {"type": "analysis", "id": id, "attributes": {
            "status": status,
            "stats": counts.json(),
        }}, "meta": {"file_info": {"sha256": sha256}}});
        return (200, Vec::new(), body.to_string());
    }
    error(404, "NotFoundError", "no such endpoint")
}

fn file_object(sha256: &str, counts: &EngineCounts) -> Response {
    let body = serde_json::json!({"data": {
        "id": sha256,
        "type": "file",
        "links": {"self": format!("https://www.virustotal.com/api/v3/files/{sha256}")},
        "attributes": {
            "sha256": sha256,
            "last_analysis_stats": counts.json(),
            "last_analysis_date": 1_700_000_000,
        },
    }});
    (200, Vec::new(), body.to_string())
}

/// The content of the part named `file` of a multipart/form-data body.
fn multipart_file(request: &Request) -> Option<Vec<u8>> {
    let content_type = request
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")?
        .1
        .clone();
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let start = find(body, delimiter.as_bytes(), 0)?;
    let headers_end = find(body, b"\r\n\r\n", start)? + 4;
    let headers = String::from_utf8_lossy(&body[start..headers_end]);
    if !headers.contains("name=\"file\"") {
        return None;
    }
    let end = find(body, format!("\r\n{delimiter}").as_bytes(), headers_end)?;
    Some(body[headers_end..end].to_vec())
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}
