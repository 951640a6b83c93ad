//! Idempotent installation of what the build and tests need: Debian packages (nats-server,
//! chromium and its driver, python3-prometheus-client), the nightly's rust-src and bpf-linker
//! at the pinned version (../shared/TOOLCHAIN.md), and cargo-fuzz for the fuzz targets.

use std::{path::Path, process::Command};

use anyhow::{bail, Context};

use crate::util::{output, run};

/// The bpf-linker release verified with this nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo-fuzz release `cargo xtask fuzz` runs the fuzz targets with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Packages the pipeline and the tests use: the console's browser test drives Debian's
/// Chromium through chromedriver, its metrics are checked by the reference OpenMetrics
/// parser (Python's prometheus_client), the history tests parse the CSV export with
/// Python's `csv` module, and the terminal console's test drives `osprey top` in tmux.
const PACKAGES: &[(&str, &str)] = &[
    ("nats-server", "/usr/sbin/nats-server"),
    ("python3", "/usr/bin/python3"),
    ("tmux", "/usr/bin/tmux"),
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    // The console's TLS test makes a certificate and speaks HTTPS with them.
    ("openssl", "/usr/bin/openssl"),
    ("curl", "/usr/bin/curl"),
    (
        "python3-prometheus-client",
        "/usr/lib/python3/dist-packages/prometheus_client/openmetrics/parser.py",
    ),
];

pub fn all() -> anyhow::Result<()> {
    packages(PACKAGES)?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    Ok(())
}

/// Installs Debian packages whose marker file is missing (running `apt-get update` once).
pub fn packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::util::is_root() {
        bail!(
            "packages {} are missing and installing them needs root",
            missing.join(", ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is missing (rustup toolchain install nightly)")?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// cargo-fuzz at the pinned version (it drives the nightly build of `fuzz/`).
pub fn cargo_fuzz() -> anyhow::Result<()> {
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if output(crate::util::cargo().args(["fuzz", "--version"])).is_some_and(|v| v.trim() == wanted)
    {
        return Ok(());
    }
    run(crate::util::cargo().args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    if output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.trim() == wanted) {
        return Ok(());
    }
    // Link against the nightly's own LLVM: bpf-linker must speak the bitcode that this
    // nightly emits, so its LLVM major version must match (`llvm-NN` feature).
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("cannot find the nightly sysroot")?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let llvm_lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib_dir.display()))?;
    let llvm_lib = llvm_lib
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_string();
    let version = output(Command::new("rustc").args(["+nightly", "-vV"])).unwrap_or_default();
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot tell the nightly's LLVM version")?
        .to_string();
    let lib_dir = lib_dir.display();
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
        ])
        .arg("--features")
        .arg(format!("llvm-{major},no-llvm-linking"))
        .env(
            "RUSTFLAGS",
            format!("-L {lib_dir} -l dylib={llvm_lib} -C link-arg=-Wl,-rpath,{lib_dir}"),
        ))
}
