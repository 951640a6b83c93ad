//! `osprey rules check PATH...`: what a policy file and Sigma files or directories load to —
//! the same load the collector does at start and on every hot reload.

use std::{path::PathBuf, process::ExitCode};

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Validate a policy file, Sigma files or directories: prints how many rules evaluate and
    /// each one that does not with its reason; exits 1 when a file does not parse or validate.
    Check {
        /// Policy files, Sigma rule files, directories (searched recursively).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

pub fn run(command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::Check { paths } => match rules::check(&paths) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
