//! What a bench binary's `main` does around its run: settings read, a two-thread runtime, the
//! run raced against SIGINT and SIGTERM (the run future is dropped on a signal, and with it every
//! process guard and namespace, so nothing is left behind), and errors printed once with their
//! causes; and the numeric settings read from the environment. Shared by the mirror and load
//! benches.

use std::future::Future;
use std::process::ExitCode;

/// Runs `run(settings)` and returns its report, or the exit code after printing why not: 2 when
/// the settings or the runtime could not be had, 1 when the run failed or was interrupted.
pub fn run_bench<S, F, Fut>(
    name: &str,
    settings: anyhow::Result<S>,
    run: F,
) -> Result<String, ExitCode>
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let settings = settings.map_err(|e| {
        eprintln!("{name}: {e:#}");
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{name}: start runtime: {e}");
            ExitCode::from(2)
        })?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(settings) => r,
            sig = interrupted() => Err(anyhow::anyhow!("{sig} received; cleaned up")),
        }
    });
    outcome.map_err(|e| {
        eprintln!("{name}: {e:#}");
        ExitCode::from(1)
    })
}

/// The number in environment variable `name`, or `default` when it is not set.
///
/// # Errors
/// The variable is set but not a number.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
