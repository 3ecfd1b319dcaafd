//! Benchmarks. Not tests: they measure and print, and the numbers go to
//! docs/benchmarks.md by hand, with how they were taken.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use clap::Subcommand;

use crate::root;

#[derive(Subcommand)]
pub enum Which {
    /// Start-up: `agent-guard run --role readonly-summarizer -- /bin/true` beside bare /bin/true and bubblewrap
    Startup {
        /// Runs per variant
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Startup { runs } => startup(runs),
    }
}

struct Variant {
    name: &'static str,
    argv: Vec<String>,
    samples: Vec<Duration>,
}

fn startup(runs: usize) -> Result<()> {
    let ag = root().join("target/release/agent-guard").to_string_lossy().into_owned();
    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut variants = vec![
        Variant { name: "bare /bin/true", argv: argv(&["/bin/true"]), samples: Vec::new() },
        Variant {
            name: "bwrap --unshare-all",
            argv: argv(&["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "/bin/true"]),
            samples: Vec::new(),
        },
        Variant {
            name: "agent-guard run (readonly-summarizer)",
            argv: vec![ag, "run".into(), "--quiet".into(), "--role".into(), "readonly-summarizer".into(), "--".into(), "/bin/true".into()],
            samples: Vec::new(),
        },
    ];
    // Warm up, then interleave the variants so that machine noise hits all alike.
    for v in &mut variants {
        for _ in 0..5 {
            time_once(&v.argv)?;
        }
    }
    for _ in 0..runs {
        for v in &mut variants {
            v.samples.push(time_once(&v.argv)?);
        }
    }
    let bwrap = median(&mut variants[1].samples.clone());
    println!("start-up, {runs} runs each, interleaved ({})", std::env::consts::ARCH);
    println!("| variant | median | p10 | p90 | ratio to bwrap |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for v in &mut variants {
        let med = median(&mut v.samples);
        let pct = |p: usize| v.samples[(v.samples.len() - 1) * p / 100];
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} |",
            v.name,
            ms(med),
            ms(pct(10)),
            ms(pct(90)),
            med.as_secs_f64() / bwrap.as_secs_f64()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_once(argv: &[String]) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{argv:?} failed: {status}");
    }
    Ok(elapsed)
}
