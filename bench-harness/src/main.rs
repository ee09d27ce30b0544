//! The `bench-harness` binary: flags -> settings -> tracing -> run, report or compare -> exit
//! code (0 pass, 1 SLO missed or regression gate crossed, 2 error; the error chain printed
//! once). SIGINT or SIGTERM during `run` drops the run, so everything it started is cleaned up
//! before the process exits with 2.

use std::process::ExitCode;

use clap::Parser as _;

use bench_harness::cli::{Cli, Command, CompareJob};
use bench_harness::compare::{self, Input};
use bench_harness::report;
use bench_harness::result::RunResult;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-harness: start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bench-harness: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let (scenario, options) = args.into_settings()?;
            eprintln!(
                "bench-harness: running {} ({} nodes, {} pods, {} variants x {} targets x {} repetitions)",
                scenario.name,
                scenario.total_nodes(),
                scenario.total_pods(),
                scenario.variants.len(),
                scenario.targets.len(),
                scenario.repetitions
            );
            // On a signal the run future is dropped, and with it every guard: peers and
            // containerds are stopped by PID, the shaped namespace is deleted.
            let out = tokio::select! {
                out = bench_harness::run::run(scenario, options) => out?,
                signal = interrupted() => anyhow::bail!(
                    "{signal} received: run stopped; its peers, containerds and network namespace were cleaned up"
                ),
            };
            Ok(run_outcome(&out.result, &out.dir))
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

/// Prints the summary and where the reports are; 1 when an SLO was missed.
fn run_outcome(result: &RunResult, dir: &std::path::Path) -> ExitCode {
    println!("{}", report::summary_table(result));
    for name in [report::MARKDOWN_FILE_NAME, report::HTML_FILE_NAME] {
        println!("report: {}", dir.join(name).display());
    }
    if result.passed() {
        ExitCode::SUCCESS
    } else {
        let missed = result.slo.iter().filter(|o| !o.pass).count();
        eprintln!("bench-harness: {missed} SLO outcome(s) missed (see the report's SLO section)");
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
    Ok(if comparison.passed() {
        ExitCode::SUCCESS
    } else {
        let crossed = comparison.gates.iter().filter(|g| g.crossed).count();
        eprintln!("bench-harness: {crossed} regression gate(s) crossed");
        ExitCode::from(1)
    })
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
