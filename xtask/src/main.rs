//! `cargo xtask`: the project's own build steps. Every command installs what it needs first
//! (idempotently), so on a fresh machine, as root, `cargo xtask run` and `cargo xtask test`
//! are all a user types.

mod bench;
mod fuzz;
mod run;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Osprey build tasks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain pieces and packages the build and tests need.
    Setup,
    /// Build and run the whole pipeline here: nats-server (JetStream), the collector and
    /// `osprey tail`. Ctrl-C stops them all.
    Run(run::RunArgs),
    /// Run every test: unit, integration, end-to-end against the real kernel and
    /// nats-server (one at a time), and the Windows build checks.
    Test(test::TestArgs),
    /// Measure overhead and latency: exec and connect storms with and without the collector.
    Bench(bench::BenchArgs),
    /// Run the fuzz targets (fuzz/) for a bounded number of runs or seconds each.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Setup => setup::all(),
        Command::Run(args) => run::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run_bench(args),
        Command::Fuzz(args) => fuzz::run(args),
    }
}
