//! `agent-guard doctor`: what this host can enforce, probed for real.

use std::path::Path;

use clap::Args;

use crate::doctor::{self, Need};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<i32> {
    let report = doctor::run(Path::new("/proc/self/mountinfo"));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &report.checks {
            let status = match (c.ok, c.need) {
                (true, _) => "ok",
                (false, Need::Required) => "MISSING",
                (false, Need::Wanted) => "missing",
                (false, Need::Optional) => "absent (optional)",
            };
            println!("{:width$}  {:17}  {}", c.name, status, crate::escape::for_terminal(&c.detail));
        }
        if !report.ok() {
            println!("\nagent-guard run cannot work here: fix the MISSING lines above");
        }
    }
    Ok(if report.ok() { 0 } else { 1 })
}
