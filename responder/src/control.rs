//! Operator control of the responder: signed [`ResponderControl`] requests on
//! `osprey.responder.control` switch dry-run on or off, or ask for the current mode.
//!
//! A switch is verified (an `operator_keys` signature, issued within five minutes, a nonce
//! never seen), applied, kept in `state_dir/mode.json` so a restart keeps what the operator
//! chose, and audited with the operator's key and name. Refused messages are audited too.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use protocol::{
    signing::{self, PublicKey},
    Actor, AuditRecord, ControlReply, Decision, ResponderControl, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{audit::AuditLog, config::ResponderConfig, metrics, responder::Responder};

/// Control messages older (or newer) than this are refused as stale.
const FRESH_NANOS: u64 = 300 * 1_000_000_000;
const NONCES_KEPT: usize = 10_000;

/// The mode an operator chose, as kept in `state_dir/mode.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedMode {
    pub dry_run: bool,
    pub time: Timestamp,
    #[serde(default)]
    pub actor: Actor,
}

pub struct Control {
    operators: Vec<PublicKey>,
    nonces: VecDeque<String>,
    state_path: PathBuf,
    audit: AuditLog,
}

impl Control {
    pub fn new(config: &ResponderConfig, client: async_nats::Client) -> anyhow::Result<Control> {
        let operators = config
            .operator_keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("operator_keys: {e}"))?;
        Ok(Control {
            operators,
            nonces: VecDeque::new(),
            state_path: config.state_dir.join("mode.json"),
            audit: AuditLog::new(config.audit_file.clone(), client),
        })
    }

    /// Puts back the mode an operator chose before a restart; `forced_dry_run`
    /// (`--dry-run`) wins over it.
    pub fn restore(&self, responder: &mut Responder, forced_dry_run: bool) {
        match read_saved(&self.state_path) {
            Ok(Some(saved)) => {
                tracing::info!(
                    dry_run = saved.dry_run,
                    by = saved.actor.name.as_deref().unwrap_or(""),
                    at = %saved.time,
                    "restoring the mode an operator set ({})",
                    self.state_path.display()
                );
                responder.set_dry_run(saved.dry_run);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                "cannot read {}: {e}; keeping dry_run = {} from the configuration",
                self.state_path.display(),
                responder.dry_run()
            ),
        }
        if forced_dry_run {
            responder.set_dry_run(true);
        }
        metrics::get().dry_run(responder.dry_run());
    }

    /// Handles one request and answers it (when it has a reply subject).
    pub async fn serve(
        &mut self,
        client: &async_nats::Client,
        responder: &mut Responder,
        message: async_nats::Message,
    ) {
        let reply = self.handle(responder, &message.payload).await;
        metrics::get().control(reply.accepted);
        let Some(to) = message.reply else { return };
        match protocol::encode(&reply) {
            Ok(bytes) => {
                if let Err(e) = client.publish(to, bytes.into()).await {
                    tracing::warn!("cannot answer a control message: {e}");
                }
            }
            Err(e) => tracing::error!("cannot encode a control reply: {e}"),
        }
    }

    async fn handle(&mut self, responder: &mut Responder, payload: &[u8]) -> ControlReply {
        let answer = |id: &str, accepted: bool, dry_run: bool, reason: String| ControlReply {
            control_id: id.to_string(),
            accepted,
            dry_run,
            reason,
            time: Timestamp::now(),
        };
        let control: ResponderControl = match protocol::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("malformed control message: {e}");
                self.audit_refusal(None, &reason).await;
                return answer("", false, responder.dry_run(), reason);
            }
        };
        if let Err(why) = self.check(&control) {
            let reason = format!("control message refused: {why}");
            self.audit_refusal(Some(&control), &reason).await;
            return answer(&control.id, false, responder.dry_run(), reason);
        }
        let Some(on) = control.dry_run else {
            let mode = if responder.dry_run() { "on" } else { "off" };
            return answer(
                &control.id,
                true,
                responder.dry_run(),
                format!("dry-run is {mode}"),
            );
        };
        let was = responder.dry_run();
        responder.set_dry_run(on);
        metrics::get().dry_run(on);
        let actor = actor_of(&control);
        let saved = SavedMode {
            dry_run: on,
            time: Timestamp::now(),
            actor: actor.clone(),
        };
        let kept = write_saved(&self.state_path, &saved);
        let who = actor.name.as_deref().unwrap_or(&control.key_id);
        let mut reason = format!(
            "dry-run switched {} (was {}) by operator {who}",
            if on { "on" } else { "off" },
            if was { "on" } else { "off" },
        );
        if let Err(e) = &kept {
            reason.push_str(&format!(
                "; not kept across a restart: cannot write {}: {e}",
                self.state_path.display()
            ));
        }
        let mut record = AuditRecord::new(
            "responder",
            "",
            "dry_run",
            Decision::Executed,
            reason.clone(),
            "ok",
        );
        record.target = Some(if on { "on" } else { "off" }.to_string());
        record.command_id = Some(control.id.clone());
        record.actor = actor;
        self.audit.record(record).await;
        answer(&control.id, true, on, reason)
    }

    fn check(&mut self, control: &ResponderControl) -> Result<(), String> {
        signing::verify(control, &self.operators).map_err(|e| e.to_string())?;
        if Timestamp::now().distance_nanos(control.issued_at) > FRESH_NANOS {
            return Err(format!("stale: issued at {}", control.issued_at));
        }
        if self.nonces.contains(&control.nonce) {
            return Err("replayed".into());
        }
        self.nonces.push_back(control.nonce.clone());
        if self.nonces.len() > NONCES_KEPT {
            self.nonces.pop_front();
        }
        Ok(())
    }

    async fn audit_refusal(&self, control: Option<&ResponderControl>, reason: &str) {
        let mut record = AuditRecord::new(
            "responder",
            "",
            "dry_run",
            Decision::Refused,
            reason,
            "refused",
        );
        if let Some(c) = control {
            record.target = c
                .dry_run
                .map(|on| if on { "on" } else { "off" }.to_string());
            record.command_id = Some(c.id.clone());
            record.actor = actor_of(c);
        }
        self.audit.record(record).await;
    }
}

fn actor_of(control: &ResponderControl) -> Actor {
    Actor {
        key_id: Some(control.key_id.clone()).filter(|k| !k.is_empty()),
        name: control.operator.clone(),
    }
}

fn read_saved(path: &Path) -> std::io::Result<Option<SavedMode>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Written to a temporary file and renamed, so a crash leaves the old or the new mode.
fn write_saved(path: &Path, mode: &SavedMode) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(mode).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_modes_survive_a_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mode.json");
        assert!(read_saved(&path).unwrap().is_none());
        let mode = SavedMode {
            dry_run: true,
            time: Timestamp::now(),
            actor: Actor {
                key_id: Some("k".into()),
                name: Some("alice".into()),
            },
        };
        write_saved(&path, &mode).unwrap();
        let back = read_saved(&path).unwrap().unwrap();
        assert!(back.dry_run);
        assert_eq!(back.actor.name.as_deref(), Some("alice"));
        std::fs::write(&path, "{").unwrap();
        assert!(read_saved(&path).is_err());
    }
}
