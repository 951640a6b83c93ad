//! `cargo xtask bench`: see docs/benchmarks.md.

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is being written")
}
