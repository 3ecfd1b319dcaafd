//! `agent-guard profile check|show`.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};

use crate::profile::{self, Context};

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Check profile files; exit 1 on any error
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the effective policy of a profile after defaults and placeholders
    Show(ShowArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["role", "profile"])))]
pub struct ShowArgs {
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// `{workdir}` to resolve against [default: current directory]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Print JSON instead of TOML
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ProfileCommand, config: Option<&Path>) -> anyhow::Result<i32> {
    let host = super::load_host_config(config)?;
    let caller_uid = nix::unistd::getuid().as_raw();
    match cmd {
        ProfileCommand::Check { files } => {
            let ctx = Context { workdir: super::run::workdir(None)?, caller_uid };
            let mut failed = 0;
            for file in &files {
                match profile::load(file, &ctx, &host) {
                    Ok(p) => println!("{}: ok (role {}, environment {})", file.display(), p.role, p.environment),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}", crate::cli::render_error(&e.into()));
                    }
                }
            }
            Ok(if failed == 0 { 0 } else { 1 })
        }
        ProfileCommand::Show(args) => {
            let path = super::run::profile_path(args.role.as_deref(), args.profile.as_deref())?;
            let ctx = Context { workdir: super::run::workdir(args.workdir.as_deref())?, caller_uid };
            let policy = profile::load(&path, &ctx, &host)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&policy)?);
            } else {
                print!("{}", toml::to_string_pretty(&policy)?);
            }
            Ok(0)
        }
    }
}
