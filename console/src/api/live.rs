//! `/api/v1/stream`: server-sent events — `finding`, `audit` and `heartbeat` as they are
//! stored, and `resync` when this page fell behind and should reload its lists.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast::error::RecvError;

use crate::app::Shared;

/// Counts the open stream while it lives.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub async fn stream(
    State(app): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.live.subscribe();
    let gauge = app.metrics.live_clients().clone();
    gauge.inc();
    // The stream ends with the longest possible session; the page reconnects and learns
    // whether it is still logged in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(app.config.session_ttl_secs);
    let state = (rx, Open(gauge), app);
    let events = futures::stream::unfold(state, move |(mut rx, open, app)| async move {
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return None,
            Ok(Ok(live)) => Event::default()
                .event(live.kind)
                .json_data(&*live.data)
                .unwrap_or_else(|_| Event::default().event("resync").data("encode")),
            Ok(Err(RecvError::Lagged(n))) => {
                app.metrics.live_lagged(n);
                Event::default().event("resync").data(n.to_string())
            }
        };
        Some((Ok(event), (rx, open, app)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
