//! Builds the eBPF programs (`sensor-ebpf`) for the Linux collector, which embeds the object.
//!
//! The eBPF crate needs nightly, `rust-src` and `bpf-linker` (`cargo xtask setup` installs
//! them); host-only builds for other targets skip this step entirely.

use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
};

fn main() {
    println!("cargo:rerun-if-env-changed=OSPREY_EBPF_OBJECT");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dst = out_dir.join("osprey-sensor.bpf.o");

    // A prebuilt object (e.g. from a packaging pipeline) skips the nested build.
    if let Some(prebuilt) = env::var_os("OSPREY_EBPF_OBJECT") {
        std::fs::copy(&prebuilt, &dst).unwrap_or_else(|e| {
            panic!("cannot copy OSPREY_EBPF_OBJECT={prebuilt:?}: {e}");
        });
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .expect("collector lives in the workspace");
    for dir in [
        "sensor-ebpf/src",
        "sensor-ebpf/Cargo.toml",
        "sensor-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    let target_dir = out_dir.join("sensor-ebpf");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace)
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "sensor-ebpf",
            "--bin",
            "sensor",
            "-Z",
            "build-std=core",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // The outer build's compiler settings must not leak into the nightly eBPF build.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup run nightly cargo` to build the eBPF programs: {e}")
    });
    if !status.success() {
        panic!(
            "building the eBPF programs failed ({status}); they need the nightly toolchain \
             with rust-src and bpf-linker 0.13.0: run `cargo xtask setup` once"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/sensor");
    std::fs::copy(&built, &dst).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
}
