//! `agent-guard profile test`: the escape corpus against a profile, in
//! real sessions of it (see docs/profile-test.md).

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};

use crate::corpus::{self, harness, TechniqueResult};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["role", "profile"])))]
pub struct TestArgs {
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Where the sessions' throwaway working directories are made [default: the temp directory]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Run only this technique (repeat for several) [default: the whole corpus]
    #[arg(long = "technique", value_name = "ID")]
    pub techniques: Vec<String>,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
}

/// Exit status: 0 nothing escaped, 1 something did, 2 nothing escaped but
/// some technique could not be judged.
pub fn run(args: TestArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "`profile test` runs sessions in this process (`run --embedded`) and needs root"
    );
    let host = super::load_host_config(config)?;
    let profile = super::run::profile_path(args.role.as_deref(), args.profile.as_deref())?;
    let agent_guard = std::env::current_exe()?.canonicalize()?;
    let parent = match &args.workdir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let opts = harness::Options {
        agent_guard: agent_guard.clone(),
        profile: profile.clone(),
        parent: parent.clone(),
        config: config.map(Path::to_owned),
        host,
        caller_uid: nix::unistd::getuid().as_raw(),
        only: args.techniques.clone(),
    };
    let t = crate::escape::for_terminal;
    if !args.json {
        println!("agent-guard profile test: {}", t(&profile.display().to_string()));
        println!(
            "  the corpus is {} __escape TECHNIQUE, added to the profile's `exec` for these sessions only:",
            t(&agent_guard.display().to_string())
        );
        println!("  the model is an agent that can make any system call from an allowed program");
        println!("  sessions run as role ROLE-profile-test in throwaway directories under {} (removed afterwards)", t(&parent.display().to_string()));
        println!();
    }
    let width = corpus::TECHNIQUES.iter().map(|t| t.id.len()).max().unwrap_or(0);
    let json = args.json;
    let report = harness::run(&opts, |r: &TechniqueResult| {
        if !json {
            print_line(r, width);
        }
    })?;
    let escaped = report.count("ESCAPED");
    let errors = report.count("ERROR");
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["escaped"] = escaped.into();
        value["errors"] = errors.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!();
        println!(
            "{} techniques: {} blocked, {} allowed by the profile, {} not applicable, {escaped} ESCAPED{}",
            report.results.len(),
            report.count("blocked"),
            report.count("allowed by the profile"),
            report.count("not applicable"),
            if errors > 0 { format!(", {errors} could not be judged") } else { String::new() }
        );
    }
    Ok(if escaped > 0 {
        1
    } else if errors > 0 {
        2
    } else {
        0
    })
}

fn print_line(r: &TechniqueResult, width: usize) {
    use std::io::Write as _;
    let detail = crate::escape::for_terminal(&r.outcome.detail());
    let word = r.outcome.word();
    // One line per technique; long evidence is cut (the JSON has it whole).
    let detail: String = if detail.chars().count() > 200 { detail.chars().take(200).chain("...".chars()).collect() } else { detail };
    println!("  {:width$}  {word:22}  {detail}", r.technique);
    let _ = std::io::stdout().flush();
}
