//! `agent-guard journal verify`: checks the journal's hash chain.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::journal::verify;

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Check that no record was edited, removed, reordered or cut off; exit 1 if one was
    Verify {
        /// The journal directory [default: [journal] dir of the host config]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: JournalCommand, config: Option<&Path>) -> anyhow::Result<i32> {
    match cmd {
        JournalCommand::Verify { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => super::load_host_config(config)?.journal.dir,
            };
            let report = verify::verify(&dir)?;
            for p in &report.torn_marked {
                println!("note: {p} (marked by a torn_tail record)");
            }
            if let Some(p) = &report.torn_unmarked {
                println!("note: {p} (it will be marked at the next append)");
            }
            for p in &report.problems {
                println!("TAMPERED: {p}");
            }
            println!(
                "{}: {} records in {} files, last {}: {}",
                dir.display(),
                report.records,
                report.files,
                report.last_seq,
                if report.ok() { "the chain holds" } else { "the chain is BROKEN" }
            );
            Ok(if report.ok() { 0 } else { 1 })
        }
    }
}
