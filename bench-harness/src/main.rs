//! The `bench-harness` binary: flags -> settings -> tracing -> run -> exit code
//! (0 pass, 1 SLO missed, 2 error; the error chain printed once).

use std::process::ExitCode;

use clap::Parser as _;

use bench_harness::cli::{Cli, Command};

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
            let out = bench_harness::run::run(scenario, options).await?;
            println!("{}", bench_harness::report::summary_table(&out.result));
            println!(
                "report: {}",
                out.dir
                    .join(bench_harness::report::MARKDOWN_FILE_NAME)
                    .display()
            );
            Ok(if out.result.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("bench-harness: SLO missed (see the report)");
                ExitCode::from(1)
            })
        }
        Command::Inspect(args) => {
            println!("{}", args.run().await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bench_harness=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
