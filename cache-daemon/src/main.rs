//! The `cache-daemon` binary: flags -> validated config -> tracing -> serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use cache_daemon::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cache-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cache-daemon: start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache-daemon: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: cache_daemon::config::Config) -> anyhow::Result<()> {
    let server = config.server.clone();
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("listen on {}", server.listen))?;
    let app = cache_daemon::server::build(config).await?;
    tracing::info!(listen = %listener.local_addr()?, "cache-daemon serving");
    cache_daemon::server::run(app, server, listener, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
