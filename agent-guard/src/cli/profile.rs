//! `agent-guard profile check|show|suggest` (and `test`, in profile_test.rs).

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
    /// Write a least-privilege profile that would have allowed exactly what recorded sessions did
    Suggest(SuggestArgs),
    /// Run the built-in corpus of escape techniques in real sessions of a profile; exit 1 on any escape
    Test(super::profile_test::TestArgs),
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// A session to learn from (an id or unique prefix); repeat for several
    #[arg(long = "from-session", required = true, value_name = "ID")]
    pub sessions: Vec<String>,
    /// The role name of the suggested profile [default: the sessions' role with `-learned`]
    #[arg(long)]
    pub name: Option<String>,
    /// Write it to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Journal directory [default: the host config's]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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

#[derive(serde::Serialize)]
struct View {
    view: Vec<crate::sandbox::view::ViewEntry>,
}

/// The filesystem view a session of `policy` gets on this host (as `run` plans it for `/bin/sh`).
fn view_of(policy: &profile::Policy) -> anyhow::Result<View> {
    use crate::sandbox::{landlock, view};
    let host = view::HostMounts::read(Path::new("/proc/self/mountinfo"))?;
    let loaders = landlock::interpreters(policy, Path::new("/bin/sh"));
    let plan = view::plan(policy, &loaders, &policy.network.unix, &host, view::Options { confine: true })?;
    Ok(View { view: plan.entries })
}

pub fn run(cmd: ProfileCommand, config: Option<&Path>) -> anyhow::Result<i32> {
    let host = super::load_host_config(config)?;
    let caller_uid = nix::unistd::getuid().as_raw();
    match cmd {
        ProfileCommand::Test(args) => super::profile_test::run(args, config),
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
        ProfileCommand::Suggest(args) => {
            super::control::authorize()?;
            let dir = args.dir.clone().unwrap_or_else(|| host.journal.dir.clone());
            let sessions = args.sessions.iter().map(|id| crate::history::one(&dir, id)).collect::<anyhow::Result<Vec<_>>>()?;
            for h in &sessions {
                anyhow::ensure!(h.end.is_some(), "session {} has not ended (or its end is not in the journal)", crate::escape::for_terminal(&h.session));
            }
            let name = args.name.clone().unwrap_or_else(|| format!("{}-learned", sessions[0].role));
            let text = profile::suggest::suggest(&name, &sessions);
            match &args.out {
                Some(path) => {
                    std::fs::write(path, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                    eprintln!("wrote {} (role {name}); check it with `agent-guard profile check {0}`", path.display());
                }
                None => print!("{text}"),
            }
            Ok(0)
        }
        ProfileCommand::Show(args) => {
            let path = super::run::profile_path(args.role.as_deref(), args.profile.as_deref())?;
            let ctx = Context { workdir: super::run::workdir(args.workdir.as_deref())?, caller_uid };
            let policy = profile::load(&path, &ctx, &host)?;
            let view = view_of(&policy)?;
            if args.json {
                let mut value = serde_json::to_value(&policy)?;
                value["view"] = serde_json::to_value(&view.view)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", toml::to_string_pretty(&policy)?);
                println!("\n# The session's filesystem view on this host: mounts beyond landlock's rules (docs/profiles.md)");
                print!("{}", toml::to_string_pretty(&view)?);
            }
            Ok(0)
        }
    }
}
