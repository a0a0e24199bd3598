//! The soak: millions of statuses through the library in one process, every delivery checked,
//! memory sampled (see `status_messenger_tools::soak` for what runs and what is checked).
//!
//! Run with: cargo run --release -p status-messenger-tools --bin soak -- --statuses 10000000 --producers 64 --sessions 1000
//!
//! Prints the figures, and with `--series` every resident set size sample. The exit code is 0
//! when every status reached every subscriber of its session exactly once and in order and the
//! steady state's memory was flat, 1 otherwise, 2 when the run could not start.
//!
//! Options (defaults: the full run; `--short` starts from the short run CI tests instead):
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `--statuses N`, `--producers P`, `--sessions S`, `--subscribers K` | the load: K subscribers per session | 10,000,000, 64, 1,000, 2 |
//! | `--history H`, `--window W` | history per session; most statuses a session may be ahead of its slowest subscriber (W + P <= H) | 1,000, 500 |
//! | `--workers T` | runtime threads for the consumer and the subscribers | 2 |
//! | `--consumer-ms A-B` | how long each consumer runs before it is aborted and restarted | 20-200 |
//! | `--attach-at F` | share of the statuses after which the hub is attached instead (1: never) | 0.8 |
//! | `--resume-after A-B`, `--away-ms A-B` | events a subscriber reads before it disconnects; how long it stays away | 1-1000, 0-20 |
//! | `--sample-ms M`, `--warmup F`, `--flat-margin F` | RSS sampling; the warm-up share of the statuses; how far above the median the steady maximum may be | 1000, 0.25, 0.10 |
//! | `--drain-s D` | how long subscribers may take to get everything after the producers are done | 60 |
//! | `--seed X` | seed of every random choice | 1 |

use std::process::ExitCode;
use std::time::Duration;

use status_messenger_tools::soak::{self, Config};

const USAGE: &str = "usage: soak [--short] [--statuses N] [--producers P] [--sessions S] \
[--subscribers K] [--history H] [--window W] [--workers T] [--consumer-ms A-B] [--attach-at F] \
[--resume-after A-B] [--away-ms A-B] [--sample-ms M] [--warmup F] [--flat-margin F] \
[--drain-s D] [--seed X] [--series]";

fn parse_args() -> Result<(Config, bool), String> {
    fn value<T: std::str::FromStr>(
        name: &str,
        args: &mut impl Iterator<Item = String>,
    ) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let raw = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        raw.parse()
            .map_err(|e| format!("{name}: bad value {raw:?}: {e}"))
    }
    fn range(name: &str, args: &mut impl Iterator<Item = String>) -> Result<(u64, u64), String> {
        let raw: String = value(name, args)?;
        let (lo, hi) = raw.split_once('-').unwrap_or((&raw, &raw));
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| format!("{name}: bad range {raw:?}: {e}"))
        };
        Ok((parse(lo)?, parse(hi)?))
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut config = if raw.iter().any(|a| a == "--short") {
        Config::short()
    } else {
        Config::default()
    };
    let mut series = false;
    let mut args = raw.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--short" => {}
            "--statuses" => config.statuses = value(&arg, &mut args)?,
            "--producers" => config.producers = value(&arg, &mut args)?,
            "--sessions" => config.sessions = value(&arg, &mut args)?,
            "--subscribers" => config.subscribers = value(&arg, &mut args)?,
            "--history" => config.history = value(&arg, &mut args)?,
            "--window" => config.window = value(&arg, &mut args)?,
            "--workers" => config.workers = value(&arg, &mut args)?,
            "--consumer-ms" => config.consumer_ms = range(&arg, &mut args)?,
            "--attach-at" => config.attach_at = value(&arg, &mut args)?,
            "--resume-after" => config.resume_after = range(&arg, &mut args)?,
            "--away-ms" => config.away_ms = range(&arg, &mut args)?,
            "--sample-ms" => config.sample_every = Duration::from_millis(value(&arg, &mut args)?),
            "--warmup" => config.warmup = value(&arg, &mut args)?,
            "--flat-margin" => config.flat_margin = value(&arg, &mut args)?,
            "--drain-s" => config.drain_timeout = Duration::from_secs(value(&arg, &mut args)?),
            "--seed" => config.seed = value(&arg, &mut args)?,
            "--series" => series = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    config.validate()?;
    Ok((config, series))
}

fn main() -> ExitCode {
    let (config, series) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let report = match soak::run(&config) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("soak: {message}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if series {
        let mib: Vec<String> = report
            .samples
            .iter()
            .map(|s| format!("{:.0}", s.rss as f64 / (1024.0 * 1024.0)))
            .collect();
        println!(
            "  rss series (MiB, every {} ms): {}",
            config.sample_every.as_millis(),
            mib.join(" ")
        );
    }
    let flat = report.memory.is_none_or(|m| m.flat);
    if report.exact() && flat {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
