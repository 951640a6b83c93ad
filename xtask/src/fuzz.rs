//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, each for a bounded number of runs
//! (or seconds), under libFuzzer's memory limits. See docs/fuzzing.md.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context};

use crate::util::{run as run_cmd, workspace_root};

/// Every target in `fuzz/fuzz_targets/`, in the order `cargo xtask test` runs them.
const TARGETS: &[&str] = &[
    "ring_record",
    "command",
    "approval",
    "signed_roundtrip",
    "policy",
    "sigma",
];

/// Runs per target when neither `--runs` nor `--seconds` is given: small enough that the six
/// targets, with their build, add about four minutes to CI (docs/fuzzing.md has the figures).
const DEFAULT_RUNS: u64 = 50_000;

/// libFuzzer's limits. A single allocation of `MALLOC_LIMIT_MB` or more, a resident set over
/// `RSS_LIMIT_MB` (the AddressSanitizer runtime alone takes about 250 MB) or one input running
/// longer than `TIMEOUT_SECS` fails the run like a panic does.
const MALLOC_LIMIT_MB: u32 = 64;
const RSS_LIMIT_MB: u32 = 512;
const TIMEOUT_SECS: u32 = 10;
/// Large enough for a whole exec record with a full argv (about 6.5 KiB) and a page of YAML.
const MAX_LEN: u32 = 8192;

#[derive(clap::Args, Default)]
pub struct FuzzArgs {
    /// Inputs to run per target (default 50000).
    #[arg(long, conflicts_with = "seconds")]
    runs: Option<u64>,
    /// Seconds to fuzz per target, instead of a number of runs.
    #[arg(long)]
    seconds: Option<u64>,
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

/// `cargo +nightly fuzz` with the options every invocation shares: debug assertions (so
/// integer overflows panic, as in the tests), and a parallel build (the default of one codegen
/// unit makes the build twice as long for a few percent of speed).
fn cargo_fuzz(root: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", subcommand])
        .args(["--debug-assertions", "--codegen-units", "16"]);
    cmd
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    crate::setup::cargo_fuzz()?;
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    let bound = match args.seconds {
        Some(s) => format!("-max_total_time={s}"),
        None => format!("-runs={}", args.runs.unwrap_or(DEFAULT_RUNS)),
    };

    let started = Instant::now();
    // One build for every target (they share all their dependencies).
    run_cmd(&mut cargo_fuzz(&root, "build"))?;
    let built = started.elapsed();
    for target in &targets {
        // New inputs go to the first directory, `fuzz/corpus/<target>` (not committed); the
        // committed seeds are read only.
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let mut cmd = cargo_fuzz(&root, "run");
        cmd.arg(target).arg(&corpus);
        let seeds = fuzz.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--").args([
            bound.clone(),
            format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
            format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            format!("-timeout={TIMEOUT_SECS}"),
            format!("-max_len={MAX_LEN}"),
            // Executions, speed and peak memory close each target's log.
            "-print_final_stats=1".into(),
        ]);
        let target_started = Instant::now();
        if let Err(e) = run_cmd(&mut cmd) {
            bail!(
                "fuzz target {target} failed: {e}\nthe failing input is in {}; reproduce it with \
                 `cd fuzz && cargo +nightly fuzz run {target} <input>`",
                fuzz.join("artifacts").join(target).display()
            );
        }
        eprintln!(
            "fuzz target {target}: {bound} in {:.0?}",
            target_started.elapsed()
        );
    }
    eprintln!(
        "fuzzing done in {:.0?} (build {:.0?})",
        started.elapsed(),
        built
    );
    Ok(())
}
