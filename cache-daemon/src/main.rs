//! The `cache-daemon` binary: flags + env + config file -> validated settings -> tracing ->
//! serve until SIGTERM/SIGINT; or one operator tool command (`ls`, `pin`, `prefetch`, ...).
//! Exit codes: 0 success, 1 a tool found a problem (corrupt blobs, nothing to unpin), 2 error.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use cache_daemon::cli::{Cli, Command, LogFormat, ServeArgs};

/// jemalloc, not glibc's malloc. Every upstream read lands in a new buffer of up to about
/// 400 KiB (hyper's read size) that lives until the writer thread has written and hashed it.
/// glibc handed those buffers back to the kernel as they were freed and faulted fresh pages in
/// for the next ones: about 62,000 page faults per cold GiB and 8 % of the daemon's CPU. With
/// jemalloc it is about 6,500, since freed pages are kept for reuse and returned to the kernel
/// after its decay time (10 s). Measured in cache-daemon/README.md (issue 18).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let outcome = match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        Some(tool) => {
            init_tracing(LogFormat::Text, "warn");
            runtime
                .block_on(cache_daemon::tool::run(tool))
                .map_err(anyhow::Error::from)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cache-daemon: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = args.into_settings()?;
    init_tracing(settings.log_format, "info");
    raise_fd_limit();
    let config = settings.config;
    for warning in config.upstream.warnings() {
        tracing::warn!("{warning}");
    }
    let server = config.server.clone();
    let peer_listen = config.cluster.as_ref().map(|c| c.listen);
    let listeners = cache_daemon::server::Listeners::bind(&server, peer_listen).await?;
    let app = cache_daemon::server::build(config).await.context("start")?;
    let admin = listeners
        .admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        listen = %listeners.mirror.local_addr()?,
        %admin,
        "cache-daemon serving"
    );
    cache_daemon::server::run(app, server, listeners, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// Raises the open file limit (see [`cache_daemon::server::raise_open_file_limit`]) and says so;
/// failure is logged, not fatal: the daemon still serves within the old limit (accept errors
/// back off, see `server`).
fn raise_fd_limit() {
    // `None` is an unlimited limit (RLIM_INFINITY).
    let shown = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match cache_daemon::server::raise_open_file_limit() {
        Ok(l) if l.before == l.after => {
            tracing::info!(limit = %shown(l.after), "open file limit");
        }
        Ok(l) => {
            tracing::info!(from = %shown(l.before), to = %shown(l.after), "raised the open file limit to its hard limit")
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: journald, kubectl logs and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
