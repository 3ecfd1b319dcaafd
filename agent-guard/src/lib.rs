//! agent-guard: runs AI agents as confined sessions.
//!
//! The data flows one way: the CLI (`cli`) parses, a session supervisor
//! (`session`) runs one session's lifecycle, and it uses the sandbox set up
//! in the child before exec (`sandbox`) according to the role's profile
//! (`profile`). `doctor` probes what this kernel can enforce.

pub mod baseline;
pub mod cli;
pub mod control;
pub mod corpus;
pub mod daemon;
pub mod doctor;
pub mod escape;
pub mod history;
pub mod journal;
pub mod monitor;
pub mod profile;
pub mod sandbox;
pub mod session;
