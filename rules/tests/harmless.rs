//! Realistic, harmless command lines fire a wide set of corpus rules. The list in
//! `tests/data/harmless_triggers.yaml` is the one to replay with real processes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{ancestor, connect, default_ancestry, exec};
use protocol::{Event, TransportProtocol};
use rules::{Engine, MatchInput, Platform};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trigger {
    shell: String,
    argv: Vec<String>,
    exe: String,
    #[serde(default)]
    invoked: Option<String>,
    #[serde(default)]
    parent: Option<Parent>,
    #[serde(default)]
    connect: Option<Connect>,
    #[serde(default)]
    fires: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Parent {
    argv: Vec<String>,
    exe: String,
}

#[derive(Debug, Deserialize)]
struct Connect {
    ip: String,
    port: u16,
    protocol: String,
}

fn event(t: &Trigger) -> Event {
    let argv: Vec<&str> = t.argv.iter().map(String::as_str).collect();
    let invoked = t.invoked.as_deref().unwrap_or(&t.exe);
    let mut event = match &t.connect {
        None => exec(&argv, &t.exe, Some(invoked)),
        Some(c) => {
            let protocol = match c.protocol.as_str() {
                "udp" => TransportProtocol::Udp,
                _ => TransportProtocol::Tcp,
            };
            let mut e = connect(&argv, &t.exe, &c.ip, c.port, protocol);
            e.process.invoked_path = Some(invoked.to_string());
            e
        }
    };
    if let Some(parent) = &t.parent {
        let argv: Vec<&str> = parent.argv.iter().map(String::as_str).collect();
        let mut ancestry = vec![ancestor(4000, &parent.exe, &argv)];
        ancestry.extend(default_ancestry().into_iter().skip(1));
        event.ancestry = ancestry;
    }
    event
}

#[test]
fn harmless_commands_fire_at_least_twenty_corpus_rules() {
    let corpus = common::sigma_corpus();
    let engine = Engine::load(&[&corpus]).unwrap_or_else(|e| panic!("{e}"));
    let stem_of: BTreeMap<String, String> = engine
        .report()
        .rules
        .iter()
        .map(|r| {
            let stem = r
                .source
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (r.id.clone(), stem)
        })
        .collect();
    let text = include_str!("data/harmless_triggers.yaml");
    let triggers: Vec<Trigger> = yaml_serde::from_str(text).expect("trigger list parses");

    let mut fired = BTreeSet::new();
    let mut mismatches = Vec::new();
    println!("| command | rules fired |\n| --- | --- |");
    for t in &triggers {
        let ev = event(t);
        let hits = engine.evaluate(&MatchInput::from_event(&ev).with_platform(Platform::Linux));
        let got: BTreeMap<String, String> = hits
            .iter()
            .map(|m| (stem_of[&m.id].clone(), m.id.clone()))
            .collect();
        println!(
            "| `{}` | {} |",
            t.shell.replace('|', "\\|"),
            got.keys()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("<br>")
        );
        if std::env::var_os("OSPREY_PRINT_FIRES").is_some() {
            for (stem, id) in &got {
                eprintln!("FIRES\t{}\t{stem}\t{id}", t.shell);
            }
        }
        if got != t.fires {
            mismatches.push(format!(
                "{}:\n  expected {:?}\n  got      {:?}",
                t.shell, t.fires, got
            ));
        }
        fired.extend(got.into_values());
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    println!(
        "{} distinct rules fired from {} commands",
        fired.len(),
        triggers.len()
    );
    assert!(fired.len() >= 20, "only {} rules fired", fired.len());
}
