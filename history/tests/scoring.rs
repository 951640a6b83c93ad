//! Anomaly scoring: the isolation forest trained on a history this test generates scores an
//! unusual connection above the typical ones (and reports it); the ONNX fixture loads and
//! scores the same vector; a broken model file is an error and the forest keeps scoring.

mod common;

#[cfg(feature = "onnx")]
use std::path::PathBuf;

use common::*;
use history::{
    detection::UNUSUAL_CONNECTION,
    score::{ConnectFeatures, Features, ModelKind},
    store, ConnectionClose, History,
};
use protocol::{Detector, TransportProtocol};

#[cfg(feature = "onnx")]
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linear.onnx")
}

/// A deterministic pseudo-random sequence in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A host's working day: curl and a backup agent talk to a handful of servers on 443 and 22
/// for a few seconds and a few kilobytes, over ten hours; the first hour is learning.
fn generate_history(history: &mut History) -> i64 {
    let mut rng = Lcg(42);
    let t0 = now() - 10 * HOUR;
    let parent = ancestor(1, "/usr/lib/systemd/systemd", &["systemd"]);
    for i in 0..600u32 {
        let t = t0 + i64::from(i) * 60 * S;
        let (argv, ip, port): (&[&str], String, u16) = if i % 3 == 0 {
            (
                &["/usr/bin/backup-agent"],
                format!("10.0.0.{}", 1 + i % 2),
                22,
            )
        } else {
            (
                &["curl", "https://mirror"],
                format!("10.1.2.{}", 1 + i % 4),
                443,
            )
        };
        let p = process(1000 + i, argv, t);
        history.process_exec(&p, Some(&parent), at(t));
        let start = t + (rng.next() * 5.0 * S as f64) as i64;
        history.connection(&p, at(start), &tcp(&ip, port));
        let duration = ((0.2 + rng.next() * 3.0) * S as f64) as i64;
        history.connection_closed(&ConnectionClose {
            exec_id: p.exec_id,
            protocol: TransportProtocol::Tcp,
            destination_ip: ip.parse().unwrap(),
            destination_port: port,
            source_port: None,
            start: at(start),
            end: at(start + duration),
            bytes_sent: 500 + (rng.next() * 4_000.0) as u64,
            bytes_received: 10_000 + (rng.next() * 100_000.0) as u64,
        });
    }
    t0
}

fn typical() -> Features {
    ConnectFeatures {
        hour: 12.0,
        port_rarity: 1.0 / 5.0,
        destination_novelty: 0.0,
        process_age: 1.0,
        script_engine: 0.0,
        parent_rarity: 1.0 / 100.0,
        udp: 0.0,
        failed: 0.0,
    }
    .complete(1.5, 2_000, 50_000)
}

fn unusual() -> Features {
    ConnectFeatures {
        hour: 3.0,
        port_rarity: 1.0,
        destination_novelty: 1.0,
        process_age: 8.0,
        script_engine: 1.0,
        parent_rarity: 1.0,
        udp: 0.0,
        failed: 0.0,
    }
    .complete(3_600.0, 50_000_000, 1_000)
}

#[test]
fn the_forest_trained_on_this_host_scores_the_unusual_above_the_typical() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    // Before any model: no score, connections stay unscored.
    assert!(history.score(&typical()).is_none());
    generate_history(&mut history);
    let rows = history.train_now().unwrap().expect("enough history");
    assert_eq!(rows, 600);

    let typical_score = history.score(&typical()).unwrap();
    let unusual_score = history.score(&unusual()).unwrap();
    eprintln!("typical {typical_score:?}\nunusual {unusual_score:?}");
    assert_eq!(unusual_score.model, ModelKind::IsolationForest);
    assert!(
        unusual_score.value > typical_score.value + 0.15,
        "unusual {unusual_score:?} vs typical {typical_score:?}"
    );
    assert_eq!(typical_score.label.as_str(), "normal");
    assert_eq!(unusual_score.label.as_str(), "suspicious");

    // Through the event path: a python one-liner holding a connection to a new destination
    // on an odd port for an hour, sending 50 MB, is reported and labelled; a typical one is not.
    let t = now();
    let odd = process(9000, &["python3", "-c", "import socket"], t - 8 * HOUR);
    history.process_exec(&odd, None, at(t - 8 * HOUR));
    assert!(history
        .connection(&odd, at(t - HOUR), &tcp("203.0.113.9", 4444))
        .iter()
        .all(|d| d.detector == Detector::Baseline));
    let found = history.connection_closed(&ConnectionClose {
        exec_id: odd.exec_id,
        protocol: TransportProtocol::Tcp,
        destination_ip: "203.0.113.9".parse().unwrap(),
        destination_port: 4444,
        source_port: None,
        start: at(t - HOUR),
        end: at(t),
        bytes_sent: 50_000_000,
        bytes_received: 1_000,
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].detector, found[0].rule_id),
        (Detector::Anomaly, UNUSUAL_CONNECTION)
    );
    assert!(
        found[0].description.contains("f_bytes_sent=17.7"),
        "{}",
        found[0].description
    );
    let curl = process(9001, &["curl", "https://mirror"], t);
    history.process_exec(
        &curl,
        Some(&ancestor(1, "/usr/lib/systemd/systemd", &["systemd"])),
        at(t),
    );
    history.connection(&curl, at(t), &tcp("10.1.2.1", 443));
    let quiet = history.connection_closed(&ConnectionClose {
        exec_id: curl.exec_id,
        protocol: TransportProtocol::Tcp,
        destination_ip: "10.1.2.1".parse().unwrap(),
        destination_port: 443,
        source_port: None,
        start: at(t),
        end: at(t + S),
        bytes_sent: 2_000,
        bytes_received: 50_000,
    });
    assert!(quiet.is_empty(), "{quiet:?}");
    let stats = history.stats();
    assert_eq!(stats.model_rows, Some(600));
    history.close().unwrap();

    let conn = store::open_read_only(&config.path).unwrap();
    let label = |exec: &protocol::ExecId| -> (String, f64) {
        conn.query_row(
            "SELECT label, score FROM connections WHERE exec_id = ?1",
            [exec.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let (odd_label, odd_score) = label(&odd.exec_id);
    let (curl_label, curl_score) = label(&curl.exec_id);
    assert_eq!(
        (odd_label.as_str(), curl_label.as_str()),
        ("suspicious", "normal")
    );
    assert!(odd_score > curl_score);
}

#[cfg(feature = "onnx")]
fn sigmoid_linear(x: &Features) -> f32 {
    // The fixture's weights (tests/fixtures/README.md).
    let w = [0.0, 1.5, 2.0, -0.2, 1.0, 0.1, 0.15, 0.1, 1.0, 0.5, 1.0];
    let z: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() - 4.0;
    1.0 / (1.0 + (-z).exp())
}

#[cfg(feature = "onnx")]
#[test]
fn the_onnx_fixture_loads_and_scores_the_same_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.scoring.model = Some(fixture());
    config.scoring.model_threshold = 0.9;
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    assert_eq!(history.stats().model_path, Some(fixture()));
    assert_eq!(history.stats().model_error, None);
    for (x, label) in [(typical(), "normal"), (unusual(), "suspicious")] {
        let score = history.score(&x).unwrap();
        assert_eq!(score.model, ModelKind::Onnx);
        assert!(
            (score.value - sigmoid_linear(&x)).abs() < 1e-5,
            "{score:?} vs {}",
            sigmoid_linear(&x)
        );
        assert_eq!(score.label.as_str(), label, "{score:?}");
    }
    assert!(history.score(&unusual()).unwrap().value > history.score(&typical()).unwrap().value);
    history.close().unwrap();
}

#[cfg(feature = "onnx")]
#[test]
fn a_broken_model_is_an_error_and_the_forest_keeps_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"this is not a protobuf").unwrap();
    let mut config = config(dir.path());
    config.scoring.model = Some(broken.clone());
    // The collector starts anyway, says why, and the built-in model scores.
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let error = history.stats().model_error.expect("the error is reported");
    assert!(error.contains(&broken.display().to_string()), "{error}");
    generate_history(&mut history);
    history.train_now().unwrap().expect("enough history");
    assert_eq!(
        history.score(&unusual()).unwrap().model,
        ModelKind::IsolationForest
    );

    // Replacing the model at run time: a broken file leaves the model in force.
    let error = history.load_model(&broken).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("ONNX model {}", broken.display())),
        "{error}"
    );
    let missing = dir.path().join("missing.onnx");
    assert!(history.load_model(&missing).is_err());
    assert_eq!(
        history.score(&unusual()).unwrap().model,
        ModelKind::IsolationForest
    );
    // A good file replaces it, and clears the error.
    history.load_model(&fixture()).unwrap();
    assert_eq!(history.score(&unusual()).unwrap().model, ModelKind::Onnx);
    assert_eq!(history.stats().model_error, None);
    history.close().unwrap();
}

#[test]
fn the_trainer_thread_trains_when_learning_ends_and_the_scorer_picks_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // The host's learning ends two seconds after the file is created; too little history is
    // retried every tenth of the retrain interval.
    config.baseline.learning_period_hours = 2.0 / 3600.0;
    config.scoring.retrain_interval_hours = 5.0 / 3600.0;
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    generate_history(&mut history);
    history.handle().flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while history.stats().model_rows.is_none() && std::time::Instant::now() < deadline {
        history.tick(at(now()));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(history.stats().model_rows, Some(600));
    assert_eq!(
        history.score(&unusual()).unwrap().model,
        ModelKind::IsolationForest
    );
    history.close().unwrap();
}
