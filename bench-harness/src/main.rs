//! The `bench-harness` binary: flags -> settings -> tracing -> run, report or compare -> files
//! -> exit code (0 pass, 1 SLO missed or regression gate crossed, 2 error, 3 `compare` left a
//! gate unjudged because its series were host-bound; the error chain printed once). The runner
//! hands back a `RunResult`; this file writes it (`result.json`) and its reports. `run` and
//! `report` end with a warning on stderr when bursts were host-bound. SIGINT or SIGTERM during
//! `run` drops the run, so everything it started is cleaned up before the process exits with 2.

use std::process::ExitCode;

use clap::Parser as _;

use bench_harness::cli::{Cli, Command, CompareJob, RunJob};
use bench_harness::compare::{self, Input, PairComparison};
use bench_harness::report::{self, human, section};
use bench_harness::result::RunResult;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("start runtime"))
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    outcome.unwrap_or_else(|err| {
        eprintln!("bench-harness: {err:#}");
        ExitCode::from(2)
    })
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let RunJob {
                scenario,
                options,
                dir,
            } = args.into_job()?;
            eprintln!(
                "bench-harness: running {} ({}, {}, {} x {} x {})",
                scenario.name,
                human::count(scenario.total_nodes(), "node"),
                human::count(scenario.total_pods(), "pod"),
                human::count(scenario.variants.len() as u64, "variant"),
                human::count(scenario.targets.len() as u64, "target"),
                human::count(scenario.repetitions, "repetition")
            );
            // On a signal the run future is dropped, and with it every guard: peers and
            // containerds are stopped by PID, the shaped namespace is deleted.
            let result = tokio::select! {
                result = bench_harness::run::run(scenario, options) => result?,
                signal = interrupted() => anyhow::bail!(
                    "{signal} received: run stopped; its peers, containerds and network namespace were cleaned up"
                ),
            };
            result.write(&dir)?;
            report::write_all(&result, &dir)?;
            Ok(run_outcome(&result, &dir))
        }
        Command::Inspect(args) => {
            println!("{}", args.run().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let (result, dir) = args.into_settings()?;
            report::write_all(&result, &dir)?;
            Ok(run_outcome(&result, &dir))
        }
        Command::Compare(args) => run_compare(args.into_job()?),
        Command::Model(args) => {
            let out = args.run()?;
            if let Some(table) = &out.against {
                println!("{table}");
            }
            Ok(run_outcome(&out.result, &out.dir))
        }
        Command::Calibrate(args) => {
            print!("{}", args.run().await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exit code of `compare` when no gate was crossed but one was not judged because its pair's
/// series were host-bound (without `--judge-host-bound`).
const EXIT_HOST_BOUND_UNJUDGED: u8 = 3;

/// Prints the summary and where the reports are, then warns about host-bound bursts; 1 when an
/// SLO was missed.
fn run_outcome(result: &RunResult, dir: &std::path::Path) -> ExitCode {
    println!("{}", report::summary_table(result));
    for name in [report::MARKDOWN_FILE_NAME, report::HTML_FILE_NAME] {
        println!("report: {}", dir.join(name).display());
    }
    let bound = result.host_bound();
    if !bound.is_empty() {
        let bursts: usize = result
            .series
            .iter()
            .map(|s| s.data.repetitions().count())
            .sum();
        eprintln!(
            "bench-harness: warning: {} of {} host-bound: the host's CPUs averaged {:.0} % busy or more, so those figures measure this machine more than the registry or the cache (compare will not gate on them without --judge-host-bound):",
            bound.len(),
            human::count(bursts as u64, "burst"),
            bench_harness::run::host::HOST_BOUND_BUSY * 100.0
        );
        for b in &bound {
            eprintln!(
                "  {}/{} repetition {}: {:.0} % busy",
                b.variant,
                b.target,
                b.repetition,
                b.mean_busy * 100.0
            );
        }
    }
    if result.passed() {
        ExitCode::SUCCESS
    } else {
        let missed = section::slo_misses(result);
        eprintln!(
            "bench-harness: {} missed (the report's SLO section has every outcome):",
            human::count(missed.len() as u64, "SLO")
        );
        for line in missed {
            eprintln!("  {line}");
        }
        ExitCode::from(1)
    }
}

fn run_compare(job: CompareJob) -> anyhow::Result<ExitCode> {
    let baseline = Input {
        name: &job.baseline.name,
        result: &job.baseline.result,
    };
    let candidate = job.candidate.as_ref().map_or(baseline, |c| Input {
        name: &c.name,
        result: &c.result,
    });
    let comparison = compare::compare(&baseline, &candidate, &job.pairing, &job.settings)?;
    match &job.out {
        Some(dir) => {
            print!("{}", report::comparison::summary(&comparison));
            for path in report::write_comparison(&comparison, dir)? {
                println!("comparison: {}", path.display());
            }
        }
        None => print!("{}", report::comparison::markdown(&comparison)),
    }
    for note in comparison
        .pairs
        .iter()
        .filter_map(PairComparison::host_bound_note)
    {
        eprintln!("bench-harness: warning: {note}");
    }
    let crossed = comparison.gates.iter().filter(|g| g.crossed).count();
    let unjudged: Vec<String> = comparison
        .unjudged()
        .map(|g| format!("{} on {}", g.gate, g.pair))
        .collect();
    if !unjudged.is_empty() {
        eprintln!(
            "bench-harness: {} not judged because the series are host-bound: {}; re-run on a quieter machine, or pass --judge-host-bound to judge them anyway",
            human::count(unjudged.len() as u64, "gate"),
            unjudged.join(", ")
        );
    }
    if crossed > 0 {
        eprintln!(
            "bench-harness: {} crossed",
            human::count(crossed as u64, "regression gate")
        );
        Ok(ExitCode::from(1))
    } else if !unjudged.is_empty() {
        Ok(ExitCode::from(EXIT_HOST_BOUND_UNJUDGED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bench_harness=info"));
    // Colours only on a terminal: logs redirected to a file or a pipe stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
