//! The operator tools (`ls`, `pin`, `unpin`, `prefetch`, `gc`, `verify`) as commands: each
//! talks to the running daemon's admin endpoint, or, when no daemon holds the store, opens the
//! stopped store itself and runs the same operation in-process (`admin.rs` has the operations).
//! Which one is decided by the store lock, so the two never touch a store at once. Before acting
//! on a running daemon for a store named by `--root` or `--config`, the tool asks the daemon
//! which store it serves (`GET /admin/store`) and refuses when it is another one: the address
//! it found may belong to another daemon (the default admin address, say).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use http::Method;

use stampede_oci::{ImageRef, Platform};

use crate::admin::{self, GcReport, PrefetchReport};
use crate::admin_client::AdminClient;
use crate::cli::{
    parse_bytes, parse_pin_target, Command, GcArgs, LsArgs, PinArgs, PrefetchArgs, ServeArgs,
    StoreArgs, UnpinArgs, VerifyArgs,
};
use crate::handler::App;
use crate::server::{build, StartError};
use crate::store::state::Pin;
use crate::store::{InventoryItem, OpenError, VerifyReport};

/// Why a tool command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] crate::cli::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The admin endpoint could not be reached.
    #[error("admin endpoint {url}: {message}")]
    Admin {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon on the admin endpoint serves another store than the one named.
    #[error(
        "the daemon on the admin endpoint {url} serves the store {} (id {serves_id}), not {} (id {wanted_id}); \
         nothing was done: give --admin with the admin address of the daemon that holds {}, or --config with its config file",
        serves.display(), wanted.display(), wanted.display()
    )]
    WrongStore {
        /// The admin URL asked.
        url: String,
        /// The store root that daemon serves.
        serves: PathBuf,
        /// Its id.
        serves_id: String,
        /// The store root named (`--root`, `--config`).
        wanted: PathBuf,
        /// Its id, or "none yet".
        wanted_id: String,
    },
    /// The daemon (or the offline operation) refused.
    #[error("{0}")]
    Refused(String),
}

/// Writes a line to stdout, ignoring a closed pipe (`cache-daemon ls | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

enum Mode {
    Online(AdminClient),
    Offline(Arc<App>),
}

/// The store root the arguments name: `--root`, else the config file's `root`, else the default.
fn store_root(args: &StoreArgs) -> Result<PathBuf, ToolError> {
    if let Some(root) = &args.root {
        return Ok(root.clone());
    }
    let file = match &args.config {
        Some(path) => {
            crate::config_file::FileConfig::load(path).map_err(|e| ToolError::Config(e.into()))?
        }
        None => crate::config_file::FileConfig::default(),
    };
    Ok(file
        .root
        .unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_ROOT)))
}

async fn mode(args: &StoreArgs) -> Result<Mode, ToolError> {
    if let Some(url) = &args.admin {
        let admin = AdminClient::from_flag(url);
        // A store named as well: the daemon must prove it serves that one.
        if args.root.is_some() || args.config.is_some() {
            admin.confirm_store(&store_root(args)?).await?;
        }
        return Ok(Mode::Online(admin));
    }
    let serve = ServeArgs {
        config: args.config.clone(),
        root: args.root.clone(),
        upstream: args.upstream.clone(),
        ..ServeArgs::default()
    };
    let settings = match serve.clone().into_settings() {
        // With no upstream configured, an image reference still names its registry.
        Err(crate::cli::ConfigError::NoUpstream) => ServeArgs {
            allow_any_registry: true,
            ..serve
        }
        .into_settings()?,
        other => other?,
    };
    let admin = settings.config.server.admin_listen;
    let root = settings.config.store.root.clone();
    if !root.join(stampede_oci::layout::BLOBS_DIR).is_dir() {
        return Err(ToolError::Refused(format!(
            "no cache-daemon store at {} (give --root or --config, or --admin for a running daemon)",
            root.display()
        )));
    }
    match build(settings.config).await {
        Ok(app) => Ok(Mode::Offline(app)),
        Err(StartError::Store {
            source: OpenError::Locked { .. },
            ..
        }) => match admin {
            Some(a) => {
                let admin = AdminClient::from_config(a, &root, args.config.as_deref());
                // The configured address may be another daemon's (the default one, say).
                admin.confirm_store(&root).await?;
                Ok(Mode::Online(admin))
            }
            None => Err(ToolError::Refused(
                "a daemon holds the store and its admin endpoint is off; stop it or enable admin_listen".into(),
            )),
        },
        Err(e) => Err(e.into()),
    }
}

fn q(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Runs a tool command and prints its answer.
///
/// # Errors
/// [`ToolError`]; the binary prints it and exits 2.
pub async fn run(command: Command) -> Result<ExitCode, ToolError> {
    match command {
        Command::Serve(_) => unreachable!("serve is not a tool"),
        Command::Ls(a) => ls(a).await,
        Command::Pin(a) => pin(a).await,
        Command::Unpin(a) => unpin(a).await,
        Command::Prefetch(a) => prefetch(a).await,
        Command::Gc(a) => gc(a).await,
        Command::Verify(a) => verify(a).await,
    }
}

/// Lists the cached blobs, as a table or JSON.
async fn ls(a: LsArgs) -> Result<ExitCode, ToolError> {
    let items: Vec<InventoryItem> = match mode(&a.store).await? {
        Mode::Online(admin) => admin.call(Method::GET, "/admin/blobs").await?,
        Mode::Offline(app) => app.store.inventory(),
    };
    if a.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&items).expect("inventory serialises")
        );
    } else {
        say!("{}", inventory_table(&items).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// Pins an image or digest.
async fn pin(a: PinArgs) -> Result<ExitCode, ToolError> {
    let request = parse_pin_target(&a.target, a.platform.as_deref())?;
    let pin: Pin = match mode(&a.store).await? {
        Mode::Online(admin) => {
            let mut path = format!("/admin/pins?target={}", q(&a.target));
            if let Some(p) = &a.platform {
                path.push_str(&format!("&platform={}", q(p)));
            }
            admin.call(Method::POST, &path).await?
        }
        Mode::Offline(app) => admin::pin(&app, &request)
            .await
            .map_err(|e| ToolError::Refused(e.message))?,
    };
    say!(
        "pinned {} ({})",
        pin.target,
        count(pin.digests.len(), "digest", "digests")
    );
    Ok(ExitCode::SUCCESS)
}

/// Removes the pins made with a target; exit 1 when there was none.
async fn unpin(a: UnpinArgs) -> Result<ExitCode, ToolError> {
    let removed = match mode(&a.store).await? {
        Mode::Online(admin) => {
            let v: serde_json::Value = admin
                .call(
                    Method::DELETE,
                    &format!("/admin/pins?target={}", q(&a.target)),
                )
                .await?;
            v["removed"].as_u64().unwrap_or(0) as usize
        }
        Mode::Offline(app) => app
            .store
            .unpin(&a.target)
            .map_err(|e| ToolError::Refused(format!("write pins file: {e}")))?,
    };
    if removed == 0 {
        eprintln!("cache-daemon: no pin with target {}", a.target);
        return Ok(ExitCode::from(1));
    }
    say!("unpinned {} ({})", a.target, count(removed, "pin", "pins"));
    Ok(ExitCode::SUCCESS)
}

/// Fetches an image into the cache.
async fn prefetch(a: PrefetchArgs) -> Result<ExitCode, ToolError> {
    let image =
        ImageRef::parse(&a.image).map_err(|e| ToolError::Refused(format!("{}: {e}", a.image)))?;
    let platform = a
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p).ok_or_else(|| {
                ToolError::Refused(format!("platform {p:?} is not os/arch[/variant]"))
            })
        })
        .transpose()?;
    let report: PrefetchReport = match mode(&a.store).await? {
        Mode::Online(admin) => {
            let mut path = format!("/admin/prefetch?image={}", q(&a.image));
            if let Some(p) = &a.platform {
                path.push_str(&format!("&platform={}", q(p)));
            }
            admin.call(Method::POST, &path).await?
        }
        Mode::Offline(app) => admin::prefetch(&app, &image, platform.as_ref())
            .await
            .map_err(|e| ToolError::Refused(e.message))?,
    };
    // The image as the operator wrote it, and the upstream it really came from (Docker's
    // normalisation would call `demo/app` `docker.io/demo/app` whatever is configured).
    say!(
        "prefetched {} from {}: {}, {}, {} fetched now ({})",
        a.image,
        report.upstream,
        count(report.manifests.len(), "manifest", "manifests"),
        count(report.blobs, "blob", "blobs"),
        report.fetched,
        count_u64(report.fetched_bytes, "byte", "bytes")
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs eviction now (or says what it would evict).
async fn gc(a: GcArgs) -> Result<ExitCode, ToolError> {
    let target = a
        .target_bytes
        .as_deref()
        .map(|b| parse_bytes("--target-bytes", b))
        .transpose()?;
    let report: GcReport = match mode(&a.store).await? {
        Mode::Online(admin) => {
            let mut path = format!("/admin/gc?dry_run={}", a.dry_run);
            if let Some(t) = target {
                path.push_str(&format!("&target_bytes={t}"));
            }
            admin.call(Method::POST, &path).await?
        }
        Mode::Offline(app) => admin::gc(&app, target, a.dry_run).await,
    };
    let verb = if report.dry_run {
        "would evict"
    } else {
        "evicted"
    };
    for d in &report.victims {
        say!("{verb} {d}");
    }
    say!(
        "{verb} {}, {}",
        count(report.victims.len(), "blob", "blobs"),
        count_u64(report.bytes, "byte", "bytes")
    );
    Ok(ExitCode::SUCCESS)
}

/// Rehashes every cached blob; exit 1 when any was quarantined or unreadable.
async fn verify(a: VerifyArgs) -> Result<ExitCode, ToolError> {
    let report: VerifyReport = match mode(&a.store).await? {
        Mode::Online(admin) => admin.call(Method::POST, "/admin/verify").await?,
        Mode::Offline(app) => {
            let store = app.store.clone();
            tokio::task::spawn_blocking(move || store.verify())
                .await
                .map_err(|e| ToolError::Refused(e.to_string()))?
        }
    };
    for d in &report.quarantined {
        say!("quarantined {d}: content does not match its digest");
    }
    for d in &report.unreadable {
        say!("unreadable {d}: forgotten");
    }
    for d in &report.held_in_quarantine {
        say!("still in quarantine {d}: found corrupt earlier, not served (remove it from the store's quarantine/ directory once looked at)");
    }
    say!(
        "verified {} ({}): {} quarantined now, {} unreadable, {} in quarantine from before",
        count(report.checked, "blob", "blobs"),
        count_u64(report.bytes, "byte", "bytes"),
        report.quarantined.len(),
        report.unreadable.len(),
        report.held_in_quarantine.len()
    );
    Ok(
        if report.quarantined.is_empty() && report.unreadable.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// `1 blob`, `2 blobs`.
fn count(n: usize, one: &str, many: &str) -> String {
    count_u64(n as u64, one, many)
}

fn count_u64(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The inventory as an aligned text table.
pub fn inventory_table(items: &[InventoryItem]) -> String {
    let mut rows = vec![[
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "MEDIA TYPE".to_owned(),
        "LAST ACCESS (UTC)".to_owned(),
        "PINNED".to_owned(),
        "SOURCE".to_owned(),
        "SEEN AS".to_owned(),
    ]];
    for i in items {
        let seen: Vec<&str> = i
            .tags
            .iter()
            .chain(i.repos.iter())
            .map(String::as_str)
            .collect();
        rows.push([
            i.digest.to_string().chars().take(19).collect(),
            stampede_oci::ByteSize(i.size_bytes).human(),
            i.media_type.clone().unwrap_or_else(|| "-".into()),
            humantime::format_rfc3339_seconds(crate::store::state::from_unix_secs(i.last_access))
                .to_string(),
            if i.pinned { "yes" } else { "no" }.to_owned(),
            i.source.clone().unwrap_or_else(|| "-".into()),
            if seen.is_empty() {
                "-".to_owned()
            } else {
                seen.join(", ")
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
