//! The `agent-guard` command: parses and dispatches, nothing else.

use clap::Parser;

fn main() {
    let cli = agent_guard::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("AGENT_GUARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let code = match agent_guard::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agent-guard: {}", agent_guard::cli::render_error(&err));
            // 125 like `env`/container runtimes: agent-guard itself failed, the agent never ran.
            125
        }
    };
    std::process::exit(code);
}
