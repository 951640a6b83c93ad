//! Prometheus exposition parsed by the reference OpenMetrics parser (the Python
//! `prometheus_client` package, Debian's `python3-prometheus-client`): a text that parser
//! rejects fails the test.

use std::{collections::BTreeMap, io::Write, process::Stdio};

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels) if labels else s.name] = s.value
print(json.dumps(out))
"#;

/// Every sample as `name{label="value",...}` (labels sorted; just `name` without labels) →
/// value. Panics with the
/// parser's message when the text is not valid OpenMetrics.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut child = std::process::Command::new(crate::workload::PYTHON)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics to the parser");
    let out = child.wait_with_output().expect("the parser finishes");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejects the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("the parser prints JSON");
    map.into_iter()
        .map(|(k, v)| (k, v.as_f64().unwrap_or(f64::NAN)))
        .collect()
}

/// The value of `name{labels}` (labels sorted, as [`parse`] writes them), 0 when absent.
pub fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}
