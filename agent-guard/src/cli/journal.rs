//! `agent-guard journal verify`: checks the journal's hash chain.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::{escape::for_terminal, journal::verify};

/// `journal verify`: the chain holds.
pub const VERIFY_OK: i32 = 0;
/// `journal verify`: a record was edited, removed, reordered or cut off.
pub const VERIFY_TAMPERED: i32 = 1;
/// `journal verify`: no journal there (no directory, or no record and no head).
/// (2 is clap's usage error, 125 agent-guard failing to read what is there.)
pub const VERIFY_NOTHING: i32 = 3;

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Check that no record was edited, removed, reordered or cut off; exit 1 if one was, 3 if there is nothing to verify
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
            let report = match verify::verify(&dir) {
                Ok(r) => r,
                Err(e) if e.nothing_to_verify() => {
                    eprintln!("agent-guard: {}", for_terminal(&e.to_string()));
                    return Ok(VERIFY_NOTHING);
                }
                Err(e) => return Err(e.into()),
            };
            // What the files say (a field name, a path) is escaped before it reaches the terminal.
            for p in &report.torn_marked {
                println!("note: {} (marked by a torn_tail record)", for_terminal(&p.to_string()));
            }
            if let Some(p) = &report.torn_unmarked {
                println!("note: {} (it will be marked at the next append)", for_terminal(&p.to_string()));
            }
            for p in &report.problems {
                println!("TAMPERED: {}", for_terminal(&p.to_string()));
            }
            println!(
                "{}: {} records in {} files, last {}: {}",
                for_terminal(&dir.display().to_string()),
                report.records,
                report.files,
                report.last_seq,
                if report.ok() { "the chain holds" } else { "the chain is BROKEN" }
            );
            Ok(if report.ok() { VERIFY_OK } else { VERIFY_TAMPERED })
        }
    }
}
