//! An OpenAI-compatible chat-completions client: `POST {base_url}/chat/completions` with
//! `tools`, answered by a message that holds either `tool_calls` or content.
//!
//! ureq is the workspace's HTTP client (intel's VirusTotal client uses it); its blocking
//! calls run on tokio's blocking pool. Every failure — unreachable, slow, an error status,
//! an answer that is not a chat completion — is an [`LlmError`] the record states.

use std::time::Duration;

use serde_json::{json, Value};

/// Largest answer read (a completion is a few kilobytes).
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the answer is not a chat completion: {0}")]
    Garbage(String),
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

#[derive(Clone, Debug)]
pub struct Completion {
    /// The assistant message as received, to send back in the next request.
    pub message: Value,
    pub tool_calls: Vec<ToolCall>,
    pub content: Option<String>,
    /// Tokens the endpoint reported (prompt and completion), else an estimate.
    pub tokens: u64,
}

#[derive(Clone)]
pub struct Llm {
    agent: ureq::Agent,
    url: String,
    model: String,
    api_key: Option<String>,
}

impl Llm {
    pub fn new(base_url: &str, model: &str, api_key: Option<String>, timeout: Duration) -> Llm {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The key header must never follow a redirect to another host.
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("osprey-investigator/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Llm {
            agent,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// One chat-completions round trip.
    pub async fn complete(
        &self,
        messages: &[Value],
        tools: &Value,
    ) -> Result<Completion, LlmError> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "tools": tools,
            "tool_choice": "auto",
        })
        .to_string();
        let this = self.clone();
        let sent = body.len() as u64;
        let (status, text) = tokio::task::spawn_blocking(move || this.post(&body))
            .await
            .map_err(|e| LlmError::Unreachable {
                url: self.url.clone(),
                reason: format!("the request task failed: {e}"),
            })??;
        if !(200..300).contains(&status) {
            return Err(LlmError::Status {
                url: self.url.clone(),
                status,
                body: text.chars().take(200).collect(),
            });
        }
        parse(&text, sent)
    }

    fn post(&self, body: &str) -> Result<(u16, String), LlmError> {
        let unreachable = |reason: String| LlmError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let mut response = request.send(body).map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?;
        Ok((status, text))
    }
}

/// The first choice's message of a chat completion.
fn parse(text: &str, sent_bytes: u64) -> Result<Completion, LlmError> {
    let garbage = |why: &str| LlmError::Garbage(why.to_string());
    let answer: Value = serde_json::from_str(text).map_err(|e| LlmError::Garbage(e.to_string()))?;
    let message = answer
        .pointer("/choices/0/message")
        .filter(|m| m.is_object())
        .ok_or_else(|| garbage("no choices[0].message"))?
        .clone();
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let name = call.pointer("/function/name").and_then(Value::as_str);
            let id = call.get("id").and_then(Value::as_str);
            let (Some(name), Some(id)) = (name, id) else {
                return Err(garbage("a tool call without an id or a function name"));
            };
            let arguments = match call.pointer("/function/arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".to_string(),
            };
            tool_calls.push(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments,
            });
        }
    }
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(String::from);
    // Endpoints that report no usage are charged about a token per four bytes.
    let tokens = answer
        .pointer("/usage/total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or((sent_bytes + text.len() as u64) / 4);
    Ok(Completion {
        message,
        tool_calls,
        content,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_and_usage_are_read_and_garbage_is_named() {
        let text = r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_process","arguments":"{}"}}]}}],"usage":{"total_tokens":42}}"#;
        let c = parse(text, 0).unwrap();
        assert_eq!(c.tokens, 42);
        assert_eq!(c.tool_calls[0].name, "get_process");
        assert!(c.content.is_none());
        assert!(matches!(parse("<html>", 0), Err(LlmError::Garbage(_))));
        assert!(matches!(
            parse("{\"choices\":[]}", 0),
            Err(LlmError::Garbage(_))
        ));
    }
}
