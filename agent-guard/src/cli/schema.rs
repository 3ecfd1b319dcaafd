//! `agent-guard schema events|summary`: JSON Schemas of the files `run`
//! writes, generated from the Rust types (kept in docs/schemas/).

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// One line of `run --events-json`
    Events,
    /// `run --summary-json`
    Summary,
    /// A request on the daemon's control socket
    Request,
    /// A response on the daemon's control socket
    Response,
    /// A line on a `run` connection once the session's supervisor has it
    RunMessage,
}

/// The schema of `which`, pretty-printed.
pub fn schema(which: Which) -> String {
    let schema = match which {
        Which::Events => schemars::schema_for!(crate::monitor::record::EventRecord),
        Which::Summary => schemars::schema_for!(crate::session::summary::Summary),
        Which::Request => schemars::schema_for!(crate::daemon::protocol::Request),
        Which::Response => schemars::schema_for!(crate::daemon::protocol::Response),
        Which::RunMessage => schemars::schema_for!(crate::daemon::protocol::RunMessage),
    };
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

pub fn run(which: Which) -> anyhow::Result<i32> {
    print!("{}", schema(which));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/schemas/ must be what the code generates: regenerate with
    /// `agent-guard schema events > docs/schemas/events.schema.json` (and summary).
    #[test]
    fn documented_schemas_are_current() {
        for (which, file) in [
            (Which::Events, "events.schema.json"),
            (Which::Summary, "summary.schema.json"),
            (Which::Request, "request.schema.json"),
            (Which::Response, "response.schema.json"),
            (Which::RunMessage, "run-message.schema.json"),
        ] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schemas/").to_owned() + file;
            let documented = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(documented, schema(which), "{path} is stale: regenerate it with `agent-guard schema`");
        }
    }
}
