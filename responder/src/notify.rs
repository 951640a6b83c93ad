//! `notify`: a Slack-compatible JSON POST (`{"text": ...}`) to a plain-HTTP webhook.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `text` to `url` (`http://host[:port]/path`); returns the HTTP status line.
pub async fn post(url: &str, text: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// webhooks are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let body = serde_json::json!({ "text": text }).to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), io)
        .await
        .map_err(|_| "webhook timed out".to_string())?
        .map_err(|e| format!("webhook: {e}"))?;
    let status = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if status
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'))
    {
        Ok(status)
    } else {
        Err(format!("webhook answered {status:?}"))
    }
}
