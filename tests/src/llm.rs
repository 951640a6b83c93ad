//! An OpenAI-compatible chat-completions stand-in on a loopback port: no LLM endpoint is
//! reachable from these machines, and a test needs a model whose every move it chooses. Each
//! `POST /v1/chat/completions` is answered by the test's script (request body → the assistant
//! message), wrapped in a chat completion; every request body is recorded, so a test can
//! check what the model was sent. One request per connection, like the VirusTotal stand-in
//! (whose request reader it shares).

use std::{
    io::Write,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use serde_json::{json, Value};

use crate::virustotal::read_request;

/// The request body (JSON) → the assistant message to answer with.
pub type Script = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

struct State {
    script: Script,
    bodies: Vec<String>,
}

pub struct LlmStandIn {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LlmStandIn {
    pub fn start(script: impl Fn(&Value) -> Value + Send + Sync + 'static) -> LlmStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        let state = Arc::new(Mutex::new(State {
            script: Arc::new(script),
            bodies: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (stop.clone(), state.clone());
        let thread = thread::Builder::new()
            .name("llm-stand-in".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        handle(stream, &shared);
                    }
                }
            })
            .expect("start the stand-in thread");
        LlmStandIn {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/v1`, for `llm.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request body received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bodies
            .clone()
    }
}

impl Drop for LlmStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let (status, body) = if request.method == "POST" && request.path == "/v1/chat/completions" {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let script = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.bodies.push(text.clone());
            state.script.clone()
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(json) => (200, completion(script(&json))),
            Err(e) => (400, json!({"error": {"message": e.to_string()}})),
        }
    } else {
        (404, json!({"error": {"message": "no such endpoint"}}))
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn completion(message: Value) -> Value {
    json!({
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100},
    })
}

/// An assistant message calling one tool.
pub fn tool_call(name: &str, arguments: Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("call_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": id, "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()},
    }]})
}

/// An assistant message concluding the investigation.
pub fn conclude(verdict: &str, summary: &str) -> Value {
    tool_call(
        "conclude",
        json!({"summary": summary, "verdict": verdict, "confidence": 0.9}),
    )
}

/// The tool results in a request, oldest first, each parsed (they are JSON documents).
pub fn tool_results(request: &Value) -> Vec<Value> {
    messages(request)
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .filter_map(|c| serde_json::from_str(c).ok())
        .collect()
}

pub fn messages(request: &Value) -> Vec<Value> {
    request["messages"].as_array().cloned().unwrap_or_default()
}
