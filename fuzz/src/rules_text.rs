//! Policy files and Sigma rules: what the collector and `osprey rules check` do with a rule
//! file's text.

use rules::{Engine, IntelVerdict, MatchInput};

use crate::fixtures::EVENTS;

/// Loads `bytes` as the file `name` (loaded as one engine, compiled into matchers), then
/// evaluates the fixed events and renders the report or every problem.
pub fn load(name: &str, bytes: &[u8]) {
    // Rule files are read as UTF-8 text; other bytes never reach the loader.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match Engine::from_texts([(name, text)]) {
        Ok(engine) => {
            let intel = IntelVerdict {
                detections: 5,
                engines: 70,
            };
            for event in EVENTS.iter() {
                let input = MatchInput::from_event(event);
                for input in [input, input.with_intel(intel)] {
                    for hit in engine.evaluate(&input) {
                        hit.to_finding(event);
                    }
                }
            }
            engine.report().to_string();
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "a failed load names a problem");
            e.to_string();
        }
    }
}
