//! The API key is a secret: it must appear in no log line (ours or the HTTP client's, at any
//! level), in no verdict, error or statistic, and on the wire only as the `x-apikey` header.
//! Its own test binary: it installs the process-wide log capture.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use intel::{Answer, ApiKey, IntelConfig, Sha256, VirusTotal, VirusTotalConfig};
use osprey_tests::virustotal::{EngineCounts, VirusTotalStandIn};
use tokio::sync::mpsc::Receiver;

const KEY: &str = "vt-secret-3b9e77c1d05a4f2e";
const WRONG_KEY: &str = "vt-wrong-secret-a1b2c3d4e5f6";
const ENV_VAR: &str = "OSPREY_TEST_VT_SECRET";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn answers(rx: &mut Receiver<Answer<u32>>, n: usize, within: Duration) -> Vec<Answer<u32>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(a) => out.push(a),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    out
}

#[test]
fn the_api_key_is_in_no_log_line_output_or_request_but_its_header() {
    let log = Captured::default();
    let writer = log.clone();
    // Everything at TRACE, the HTTP client's `log` records included (bridged into tracing).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("install the log capture");

    let mut stand_in = VirusTotalStandIn::start(KEY);
    let dir = tempfile::tempdir().unwrap();
    let known = Sha256::digest(b"known");
    stand_in.know_file(&known.to_string(), EngineCounts::malicious(5));
    stand_in.rate_limit_next(1, Some(1));
    stand_in.fail_next(1, 500);
    stand_in.analyses_complete_after(1, EngineCounts::malicious(3));
    let exe = dir.path().join("unknown-tool");
    std::fs::write(&exe, b"an unknown executable").unwrap();
    let unknown = Sha256::digest(b"an unknown executable");

    // The key from the environment, as deployments should pass it; the whole configuration
    // logged, as a collector might at start.
    std::env::set_var(ENV_VAR, KEY);
    let yaml = format!(
        "virustotal:\n  api_key_env: {ENV_VAR}\n  base_url: {}\n  per_minute: 100\n  \
         retry_initial: 100ms\n  retry_max: 500ms\n  upload:\n    enabled: true\n    \
         poll_interval: 100ms\n",
        stand_in.base_url()
    );
    let config: IntelConfig = yaml_serde::from_str(&yaml).unwrap();
    config.validate().unwrap();
    let vt_config = config.virustotal.clone().unwrap();
    tracing::info!(
        "intel configuration: {config:?}, key {:?}",
        vt_config.api_key().unwrap()
    );
    let mut output = Vec::<String>::new();
    output.push(format!("{config:?} {}", vt_config.api_key().unwrap()));

    let (vt, mut rx) = VirusTotal::<u32>::start(&vt_config, &dir.path().join("intel.db")).unwrap();
    vt.lookup(known, None, 1).unwrap();
    vt.lookup(unknown, Some(exe.clone()), 2).unwrap();
    let got = answers(&mut rx, 3, Duration::from_secs(30));
    assert_eq!(
        got.len(),
        3,
        "known, unknown, then the upload's analysis: {got:?}"
    );

    // The server away for a while, then back.
    stand_in.stop();
    vt.lookup(Sha256::digest(b"during the outage"), None, 3)
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    stand_in.run();
    let mut got_more = answers(&mut rx, 1, Duration::from_secs(20));
    assert_eq!(got_more.len(), 1);

    // A wrong key, refused by the server: logged as refused, the key itself never.
    let wrong = VirusTotalConfig {
        api_key: Some(ApiKey::new(WRONG_KEY)),
        ..vt_config.clone()
    };
    let (vt_wrong, _rx_wrong) =
        VirusTotal::<u32>::start(&wrong, &dir.path().join("other.db")).unwrap();
    vt_wrong.lookup(known, None, 9).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    for answer in got.iter().chain(got_more.iter()) {
        output.push(format!("{answer:?}"));
        output.push(serde_json::to_string(&answer.verdict).unwrap());
    }
    output.push(format!("{:?} {:?}", vt.stats(), vt_wrong.stats()));
    drop((vt, vt_wrong));
    got_more.clear();

    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("VirusTotal requests paused"),
        "the capture works:\n{log}"
    );
    assert!(log.contains("refused the API key"), "{log}");
    assert!(
        log.contains("ureq"),
        "the HTTP client's own log lines were captured:\n{log}"
    );
    assert!(log.contains("intel configuration"), "{log}");
    // ureq-proto can hex-dump the bytes it writes, 16 a line, which would split the key
    // across lines: such dumps must not happen at all (log's TRACE is compiled out).
    assert!(
        !log.contains("ureq_proto::util"),
        "raw HTTP bytes were logged:\n{log}"
    );
    assert!(
        !log.contains("apikey"),
        "the key's header was logged:\n{log}"
    );
    for secret in [KEY, WRONG_KEY] {
        assert!(!log.contains(secret), "a log line holds the key:\n{log}");
        for text in &output {
            assert!(!text.contains(secret), "output holds the key: {text}");
        }
    }

    let exchanges = stand_in.exchanges();
    assert!(exchanges.len() >= 8, "{}", exchanges.len());
    for e in &exchanges {
        let key = e.header("x-apikey").unwrap();
        assert!(key == KEY || key == WRONG_KEY);
        for secret in [KEY, WRONG_KEY] {
            assert!(!e.path.contains(secret));
            assert!(!String::from_utf8_lossy(&e.body).contains(secret));
            assert!(!e.response_body.contains(secret));
            let elsewhere = e
                .headers
                .iter()
                .chain(e.response_headers.iter())
                .filter(|(name, _)| name != "x-apikey")
                .any(|(_, value)| value.contains(secret));
            assert!(!elsewhere, "{e:?}");
        }
    }
}
