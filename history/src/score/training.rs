//! Training the built-in model on the host's own history, off the event path: a thread that
//! trains when the host's first learning period ends and every `retrain_interval_hours`
//! after, each time on the feature vectors of the last `training_window_days` (connections
//! and UDP flows), and hands the forest to the scorer.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Sender,
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use protocol::Timestamp;
use rusqlite::Connection;

use super::{features::FEATURE_NAMES, Features, IsolationForest};
use crate::{config::ScoringConfig, store, HistoryError};

const NANOS_PER_HOUR: f64 = 3_600e9;

/// The most recent feature vectors (at most `max` rows) since `since`.
pub fn training_rows(
    conn: &Connection,
    since: Timestamp,
    max: usize,
) -> Result<Vec<Features>, HistoryError> {
    let columns = FEATURE_NAMES.join(", ");
    let mut rows = Vec::new();
    for (table, time) in [("connections", "start_ns"), ("udp_flows", "first_ns")] {
        let mut stmt = conn.prepare(&format!(
            "SELECT {columns} FROM {table} WHERE {time} >= ?1 AND f_hour IS NOT NULL
             ORDER BY {time} DESC LIMIT ?2"
        ))?;
        let mut q = stmt.query(rusqlite::params![since.unix_nanos(), max as i64])?;
        while let Some(r) = q.next()? {
            let mut f = [0f32; FEATURE_NAMES.len()];
            for (i, v) in f.iter_mut().enumerate() {
                *v = r.get::<_, f64>(i)? as f32;
            }
            rows.push(f);
        }
    }
    rows.truncate(max);
    Ok(rows)
}

/// Trains a forest on the history in `conn` as of `now`; `None` with fewer than
/// `min_training_rows` rows.
pub fn train(
    conn: &Connection,
    config: &ScoringConfig,
    now: Timestamp,
) -> Result<Option<IsolationForest>, HistoryError> {
    let window = (config.training_window_days * 24.0 * NANOS_PER_HOUR) as i64;
    let since = Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(window));
    let rows = training_rows(conn, since, config.max_training_rows)?;
    if rows.len() < config.min_training_rows {
        tracing::info!(
            rows = rows.len(),
            needed = config.min_training_rows,
            "too little history to train the anomaly model yet"
        );
        return Ok(None);
    }
    // Seeded by the row count: the same history trains the same forest.
    Ok(IsolationForest::train(
        &rows,
        config.trees,
        config.sample_size,
        rows.len() as u64,
    ))
}

/// The background trainer; stops when dropped.
pub struct Trainer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trainer {
    /// Trains from `first_due` on, then every `retrain_interval_hours`; too little history
    /// retries every tenth of the interval (at most hourly).
    pub fn start(
        path: &Path,
        config: &ScoringConfig,
        first_due: Timestamp,
        models: Sender<Arc<IsolationForest>>,
    ) -> Result<Trainer, HistoryError> {
        let stop = Arc::new(AtomicBool::new(false));
        let job = Job {
            path: path.to_path_buf(),
            config: config.clone(),
            stop: stop.clone(),
            models,
        };
        let thread = std::thread::Builder::new()
            .name("osprey-history-train".into())
            .spawn(move || job.run(first_due))
            .map_err(|e| HistoryError::Thread(e.to_string()))?;
        Ok(Trainer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Job {
    path: PathBuf,
    config: ScoringConfig,
    stop: Arc<AtomicBool>,
    models: Sender<Arc<IsolationForest>>,
}

impl Job {
    fn run(self, first_due: Timestamp) {
        let interval = (self.config.retrain_interval_hours * NANOS_PER_HOUR) as i64;
        let retry = (interval / 10).min(NANOS_PER_HOUR as i64);
        let mut due = first_due.unix_nanos();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Timestamp::now().unix_nanos();
            if now < due {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            let trained = store::open_read_only(&self.path)
                .and_then(|conn| train(&conn, &self.config, Timestamp::from_unix_nanos(now)));
            due = match trained {
                Ok(Some(forest)) => {
                    tracing::info!(rows = forest.trained_rows(), "anomaly model trained");
                    if self.models.send(Arc::new(forest)).is_err() {
                        return;
                    }
                    now + interval
                }
                Ok(None) => now + retry,
                Err(error) => {
                    tracing::warn!(%error, "training the anomaly model failed");
                    now + retry
                }
            };
        }
    }
}
