//! What every part of the console shares.

use std::sync::Arc;

use protocol::signing::KeyPair;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::{auth::Auth, config::ConsoleConfig, metrics::Metrics, store::Store};

/// A change the open pages hear about at once (server-sent events).
#[derive(Clone, Debug)]
pub struct Live {
    /// `finding`, `audit` or `heartbeat`.
    pub kind: &'static str,
    pub data: Arc<Value>,
}

pub struct App {
    pub config: ConsoleConfig,
    pub store: Store,
    pub auth: Auth,
    pub metrics: Metrics,
    pub live: broadcast::Sender<Live>,
    pub nats: async_nats::Client,
    /// Signs operator messages; `None`: the console is read-only.
    pub key: Option<KeyPair>,
}

pub type Shared = Arc<App>;

impl App {
    pub fn publish(&self, kind: &'static str, data: Value) {
        // No page listening is fine: the store has it.
        let _ = self.live.send(Live {
            kind,
            data: Arc::new(data),
        });
    }
}
