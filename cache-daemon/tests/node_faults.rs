//! Faults on the node itself rather than upstream: the daemon killed with SIGKILL mid-fill and
//! right after a commit, the disk filling up during a fill (a small tmpfs as the store), a store
//! directory that cannot be written at start, and a committed blob corrupted on disk (found by
//! `verify` online and offline, and by `verify_on_read`).
//!
//! Mounting needs root: those tests use stampede-lab's `root_or_skip` (they fail instead of
//! skipping under `STAMPEDE_REQUIRE_REAL=1`), and every mount is undone by a `Drop` guard.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use stampede_oci::manifest::DOCKER_MANIFEST;
use stampede_oci::Digest;

use crate::common::real::{free_port, output_within, DaemonBinary};
use crate::common::upstream::{Behavior, FakeUpstream, Gate};
use crate::common::{blob_path, metrics};
use crate::common::{
    body, data, eventually, first_chunk, get, header, request, rest, within, TestDaemon,
};

const MIB: usize = 1 << 20;

fn stored_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(&d.hex()[..2]).join(d.hex())
}

/// Flips one byte of a file in place (same length, as bit rot would).
fn flip_byte(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
}

/// Digests of the files under `<root>/blobs/`.
fn blobs_on_disk(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            found.insert(format!(
                "sha256:{}",
                blob.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Files left in `<root>/tmp/`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Runs a `cache-daemon` tool command: (exit code, stdout, stderr).
fn tool(args: &[&str]) -> (i32, String, String) {
    let out = output_within(
        DaemonBinary::command().args(args).env("RUST_LOG", "warn"),
        Duration::from_secs(30),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tmpfs mounted at a directory, unmounted on drop (lazily if something still holds it).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Self {
        crate::common::real::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(at),
        );
        Self { at: at.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.at).status();
        if !done.is_ok_and(|s| s.success()) {
            Command::new("umount").arg("-l").arg(&self.at).status().ok();
        }
    }
}

/// The real binary on `root` in front of `upstream`, admin off.
fn start_binary(root: &Path, upstream: &str, log: &Path) -> DaemonBinary {
    let port = free_port();
    let mut cmd = DaemonBinary::command();
    cmd.arg("--root")
        .arg(root)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "off", "--upstream", upstream])
        .env("RUST_LOG", "info");
    DaemonBinary::start_with(cmd, port, log)
}

/// SIGKILL with three clients mid-fill (the upstream paused half-way) and one blob just
/// committed: the clients are cut, never handed a complete-looking body; the partial temp file
/// is removed at restart (and the log says so); the blob is fetched upstream again, byte-exact;
/// the committed blob survived and is served without the upstream; the index matches the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fill_and_after_a_commit_then_restart_recovers_cleanly() {
    let up = FakeUpstream::start().await;
    let small = data(256 * 1024, 90);
    let committed = up.blob(small.clone(), Behavior::default());
    let big = data(2 * MIB, 91);
    let gate = Gate::new(MIB);
    let filling = up.blob(
        big.clone(),
        Behavior {
            gate: Some(gate.clone()),
            chunk_bytes: 64 * 1024,
            ..Behavior::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let upstream = up.url();
    let daemon = within(tokio::task::spawn_blocking({
        let (root, log) = (root.clone(), work.path().join("first.log"));
        move || start_binary(&root, &upstream, &log)
    }))
    .await
    .unwrap();

    // Committed: the whole body arrived, so the commit (fsync + rename) is done.
    let got = body(get(&daemon.url(&blob_path(&committed))).await)
        .await
        .unwrap();
    assert!(got[..] == small[..]);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut resp = get(&daemon.url(&blob_path(&filling))).await;
        assert_eq!(resp.status(), 200);
        let head = first_chunk(resp.body_mut()).await;
        readers.push((resp.into_body(), head));
    }
    let partial = temp_files(&root);
    assert_eq!(partial.len(), 1, "one fill in progress: {partial:?}");
    let partial_len = std::fs::metadata(&partial[0]).unwrap().len();
    assert!(partial_len > 0 && partial_len < big.len() as u64);

    let status = within(tokio::task::spawn_blocking(move || daemon.kill()))
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    for (reader, head) in readers {
        let got = within(rest(reader, head.to_vec())).await;
        assert!(
            got.is_err(),
            "a reader of the killed fill must see a cut, got {} bytes",
            got.map(|g| g.len()).unwrap_or_default()
        );
    }
    gate.open();

    let upstream = up.url();
    let second_log = work.path().join("second.log");
    let daemon = within(tokio::task::spawn_blocking({
        let (root, log) = (root.clone(), second_log.clone());
        move || start_binary(&root, &upstream, &log)
    }))
    .await
    .unwrap();
    let log = std::fs::read_to_string(&second_log).unwrap();
    assert!(log.contains("temp_files_removed=1"), "{log}");
    assert!(temp_files(&root).is_empty());
    assert!(!stored_path(&root, &filling).exists());

    let got = body(get(&daemon.url(&blob_path(&committed))).await)
        .await
        .unwrap();
    assert!(got[..] == small[..]);
    assert_eq!(
        up.count(Method::GET, &committed.to_string()),
        1,
        "the committed blob survived the kill"
    );
    let got = body(get(&daemon.url(&blob_path(&filling))).await)
        .await
        .unwrap();
    assert!(got[..] == big[..], "refetched bytes are exact");
    assert_eq!(
        up.count(Method::GET, &filling.to_string()),
        2,
        "the partial file was not served; the blob was fetched again"
    );
    let status = within(tokio::task::spawn_blocking(move || daemon.terminate()))
        .await
        .unwrap();
    assert!(status.success());

    // The index (what `ls` lists) matches the disk, and every file verifies.
    let root_arg = root.to_str().unwrap().to_owned();
    let (code, out, err) = tool(&["ls", "--json", "--root", &root_arg]);
    assert_eq!(code, 0, "{err}");
    let listed: BTreeSet<String> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = [committed.to_string(), filling.to_string()].into();
    assert_eq!(listed, expected);
    assert_eq!(blobs_on_disk(&root), expected);
    let (code, out, err) = tool(&["verify", "--root", &root_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified 2 blobs"), "{out}");
}

/// The disk fills up during a fill (an 8 MiB tmpfs holding a 5 MiB filler file, a 4 MiB blob):
/// the fill fails, its readers are cut, nothing is committed, the temp file is gone, the error
/// is counted and the daemon stays up. While the store is full, misses (the same blob, a range of
/// it, another blob) are streamed from upstream without being stored, still never handing out
/// unverified bytes as complete (a corrupt upstream blob is cut). Once the filler is removed, the
/// next miss is stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_during_a_fill_commits_nothing_and_misses_pass_through_until_space_frees() {
    if !stampede_lab::root_or_skip("mount a small tmpfs as the store") {
        return;
    }
    let up = FakeUpstream::start().await;
    let big = data(4 * MIB, 92);
    let gate = Gate::new(MIB);
    let large = up.blob(
        big.clone(),
        Behavior {
            gate: Some(gate.clone()),
            chunk_bytes: 64 * 1024,
            ..Behavior::default()
        },
    );
    let other_bytes = data(64 * 1024, 93);
    let other = up.blob(other_bytes.clone(), Behavior::default());
    let corrupt = up.blob(
        data(512 * 1024, 94),
        Behavior {
            corrupt: true,
            ..Behavior::default()
        },
    );
    let mnt = tempfile::tempdir().unwrap();
    let root = mnt.path().to_owned();
    let tmpfs = Tmpfs::mount(&root, "size=8m");
    let filler = root.join("filler");
    std::fs::write(&filler, data(5 * MIB, 95)).unwrap();
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.store.root = root.clone();
    })
    .await;
    let store = cache.daemon.app().store.clone();

    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut resp = get(&cache.url(&blob_path(&large))).await;
        assert_eq!(resp.status(), 200);
        let head = first_chunk(resp.body_mut()).await;
        readers.push((resp.into_body(), head));
    }
    gate.open();
    for (reader, head) in readers {
        assert!(
            within(rest(reader, head.to_vec())).await.is_err(),
            "a reader of the fill that hit ENOSPC is cut"
        );
    }
    eventually(|| store.health().is_full()).await;
    assert!(!store.contains(&large));
    assert!(!stored_path(&root, &large).exists());
    eventually(|| temp_files(&root).is_empty()).await;
    let m = metrics(&cache).await;
    assert!(
        m.contains("cache_daemon_store_write_errors_total{kind=\"no_space\"} 1"),
        "{m}"
    );
    assert!(m.contains("cache_daemon_store_full 1"), "{m}");
    assert_eq!(get(&cache.url("/healthz")).await.status(), 200);

    // Full: the retry streams through, whole and exact, and is not stored.
    let got = body(get(&cache.url(&blob_path(&large))).await)
        .await
        .unwrap();
    assert!(got[..] == big[..]);
    assert_eq!(up.count(Method::GET, &large.to_string()), 2);
    assert!(!store.contains(&large) && temp_files(&root).is_empty());
    // A range is cut from the whole blob.
    let resp = request(
        "GET",
        &cache.url(&blob_path(&large)),
        &[("range", "bytes=1000000-1000099")],
    )
    .await;
    assert_eq!(resp.status(), 206);
    assert_eq!(
        header(&resp, "content-range"),
        format!("bytes 1000000-1000099/{}", big.len())
    );
    let got = body(resp).await.unwrap();
    assert!(got[..] == big[1_000_000..1_000_100]);
    // Another miss passes through too.
    let got = body(get(&cache.url(&blob_path(&other))).await)
        .await
        .unwrap();
    assert!(got[..] == other_bytes[..]);
    assert!(!store.contains(&other));
    // A corrupt upstream blob is cut, not handed out complete.
    let resp = get(&cache.url(&blob_path(&corrupt))).await;
    assert_eq!(resp.status(), 200);
    assert!(
        body(resp).await.is_err(),
        "a mismatching passthrough is cut"
    );
    let m = metrics(&cache).await;
    assert!(
        m.contains("cache_daemon_requests_total{kind=\"blob\",result=\"passthrough\"} 4"),
        "{m}"
    );
    assert!(m.contains("cache_daemon_digest_mismatches_total 1"), "{m}");

    // Space frees up: the next miss is stored again.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = body(get(&cache.url(&blob_path(&large))).await)
        .await
        .unwrap();
    assert!(got[..] == big[..]);
    assert!(store.contains(&large));
    assert!(std::fs::read(stored_path(&root, &large)).unwrap() == big);
    assert!(!store.health().is_full());
    assert!(metrics(&cache).await.contains("cache_daemon_store_full 0"));

    // The store holds files (its lock) open: close it before unmounting.
    drop(store);
    cache.stop().await;
    drop(tmpfs);
}

/// Temp files that cannot be created (a read-only tmpfs mounted over `tmp/` under the running
/// daemon): the fill fails before sending a byte and stores nothing, the store is marked as
/// unable to take blobs, and the request whose fill found that out falls back to streaming the
/// blob from upstream (200, whole and exact) instead of a 502; the next miss passes through
/// directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_that_cannot_be_created_make_misses_pass_through() {
    if !stampede_lab::root_or_skip("mount a read-only tmpfs over the store's tmp/") {
        return;
    }
    let up = FakeUpstream::start().await;
    let content = data(300 * 1024, 99);
    let d = up.blob(content.clone(), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    let store = cache.daemon.app().store.clone();
    let tmp = Tmpfs::mount(&cache.dir.path().join("store/tmp"), "ro,size=1m");
    let url = cache.url(&blob_path(&d));
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200, "the fill's own request falls back");
    let got = body(resp).await.unwrap();
    assert!(got[..] == content[..]);
    assert_eq!(
        up.count(Method::GET, &d.to_string()),
        2,
        "the fill's GET, then the fallback's"
    );
    let got = body(get(&url).await).await.unwrap();
    assert!(got[..] == content[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 3);
    assert!(!store.contains(&d));
    let m = metrics(&cache).await;
    assert!(m.contains("cache_daemon_store_full 1"), "{m}");
    assert!(
        m.contains("cache_daemon_store_write_errors_total{kind=\"other\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cache_daemon_requests_total{kind=\"blob\",result=\"miss\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cache_daemon_requests_total{kind=\"blob\",result=\"passthrough\"} 1"),
        "{m}"
    );
    drop(tmp);
    drop(store);
    cache.stop().await;
}

/// A pass-through miss (the store is a tmpfs marked full, so its free space does not move under
/// the test) of a 24 MiB blob through an upstream with one slot (`concurrency = 1`), asked on a
/// raw socket with a 4 KiB receive buffer that reads nothing, under a daemon whose
/// `client_write_timeout` is `limit`; `other` is a small blob of the same upstream. Fields drop
/// in order: the daemon before the mount, the mount before its directory.
struct StalledPassthrough {
    up: FakeUpstream,
    cache: TestDaemon,
    stalled: tokio::net::TcpStream,
    big_len: usize,
    other: Digest,
    small: Vec<u8>,
    _tmpfs: Tmpfs,
    _mnt: tempfile::TempDir,
}

async fn a_stalled_passthrough(limit: Duration) -> StalledPassthrough {
    let up = FakeUpstream::start().await;
    let big_len = 24 * MIB;
    let big = up.blob(
        data(big_len, 100),
        Behavior {
            chunk_bytes: 64 * 1024,
            ..Behavior::default()
        },
    );
    let small = data(64 * 1024, 101);
    let other = up.blob(small.clone(), Behavior::default());
    let mnt = tempfile::tempdir().unwrap();
    let root = mnt.path().to_owned();
    let tmpfs = Tmpfs::mount(&root, "size=4m");
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.store.root = root.clone();
        c.upstream.concurrency = 1;
        c.server.client_write_timeout = limit;
    })
    .await;
    let store = cache.daemon.app().store.clone();
    let enospc = std::io::Error::from(std::io::ErrorKind::StorageFull);
    store.health().write_failed(&enospc, &root, 0);
    assert!(!store.accepts_fills());

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within(socket.connect(cache.daemon.addr())).await.unwrap();
    use tokio::io::AsyncWriteExt as _;
    let req = format!("GET {} HTTP/1.1\r\nHost: cache\r\n\r\n", blob_path(&big));
    within(stalled.write_all(req.as_bytes())).await.unwrap();
    eventually(|| up.count(Method::GET, &big.to_string()) == 1).await;
    StalledPassthrough {
        up,
        cache,
        stalled,
        big_len,
        other,
        small,
        _tmpfs: tmpfs,
        _mnt: mnt,
    }
}

/// A client that starts a pass-through miss and stops reading holds the upstream's only slot
/// until the server's `client_write_timeout` (500 ms here) closes its connection, not for as
/// long as it keeps it open: another miss (another digest) through the same upstream is
/// served, and the stalled client's response is cut short, never complete. The negative
/// control is `without_a_write_timeout_a_stalled_passthrough_client_keeps_the_upstream_slot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_passthrough_client_does_not_hold_the_upstream_slot() {
    if !stampede_lab::root_or_skip("mount a small tmpfs as the store") {
        return;
    }
    let mut s = a_stalled_passthrough(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let served = body(get(&s.cache.url(&blob_path(&s.other))).await).await;
    assert!(served.unwrap()[..] == s.small[..]);
    eprintln!(
        "other miss served {} ms after the stalled client's request",
        started.elapsed().as_millis()
    );

    // The stalled client, reading at last, gets less than the blob and then the cut.
    use tokio::io::AsyncReadExt as _;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    within(async {
        loop {
            match s.stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        got < s.big_len,
        "got {got} bytes of a {}-byte blob",
        s.big_len
    );
    s.cache.stop().await;
}

/// The negative control of `a_stalled_passthrough_client_does_not_hold_the_upstream_slot`:
/// with a write timeout of an hour (as good as none), the stalled client still holds the
/// upstream's only slot seconds later (the other miss has not even reached the upstream);
/// closing the stalled client frees it and the other miss is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_write_timeout_a_stalled_passthrough_client_keeps_the_upstream_slot() {
    if !stampede_lab::root_or_skip("mount a small tmpfs as the store") {
        return;
    }
    let s = a_stalled_passthrough(Duration::from_secs(3600)).await;

    let url = s.cache.url(&blob_path(&s.other));
    let waiting = tokio::spawn(async move { body(get(&url).await).await });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !waiting.is_finished(),
        "another miss was served while a stalled client held the only upstream slot"
    );
    assert_eq!(
        s.up.count(Method::GET, &s.other.to_string()),
        0,
        "another miss reached the upstream while its only slot was held"
    );

    drop(s.stalled);
    let served = within(waiting).await.unwrap().unwrap();
    assert!(served[..] == s.small[..]);
    assert_eq!(s.up.count(Method::GET, &s.other.to_string()), 1);
    s.cache.stop().await;
}

/// With `verify_on_read`, 20 concurrent `Range: bytes=0-0` GETs of a committed 8 MiB blob cost
/// one whole-blob rehash (`read_rechecks_total` 1), and a later range of the same unchanged
/// file none. A corruption after that remembered verification is still caught by a whole GET,
/// which always hashes as it streams: cut, quarantined, counted, and refetched next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_read_ranges_share_one_recheck_and_whole_gets_still_catch_corruption() {
    let up = FakeUpstream::start().await;
    let content = data(8 * MIB, 102);
    let d = up.blob(content.clone(), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.store.verify_on_read = true;
    })
    .await;
    let root = cache.dir.path().join("store");
    let url = cache.url(&blob_path(&d));
    assert!(body(get(&url).await).await.unwrap()[..] == content[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);

    let ranges = (0..20).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let resp = request("GET", &url, &[("range", "bytes=0-0")]).await;
            assert_eq!(resp.status(), 206);
            body(resp).await.unwrap()
        })
    });
    for r in futures_util::future::join_all(ranges).await {
        assert_eq!(within(async { r }).await.unwrap()[..], content[..1]);
    }
    let m = metrics(&cache).await;
    assert!(m.contains("cache_daemon_read_rechecks_total 1\n"), "{m}");
    let resp = request("GET", &url, &[("range", "bytes=100-199")]).await;
    assert_eq!(resp.status(), 206);
    assert!(body(resp).await.unwrap()[..] == content[100..200]);
    let m = metrics(&cache).await;
    assert!(
        m.contains("cache_daemon_read_rechecks_total 1\n"),
        "a range of a file verified moments ago is not rehashed: {m}"
    );
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);

    // Verified whole (and remembered), then corrupted: the next whole GET still catches it.
    assert!(body(get(&url).await).await.unwrap()[..] == content[..]);
    flip_byte(&stored_path(&root, &d), 4 * MIB as u64);
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert!(body(resp).await.is_err(), "a corrupted hit is cut");
    assert!(root.join("quarantine").join(d.hex()).exists());
    let m = metrics(&cache).await;
    assert!(m.contains("cache_daemon_read_mismatches_total 1"), "{m}");
    assert!(body(get(&url).await).await.unwrap()[..] == content[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
}

/// A store directory that cannot be written (under a regular file; a read-only mount): the
/// real binary exits 2 promptly, naming the path and the cause.
#[test]
fn unwritable_store_at_start_is_a_clear_error_and_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut cases = vec![(file.join("store"), "Not a directory", None)];
    if stampede_lab::root_or_skip("mount a read-only tmpfs as the store") {
        let ro = work.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let guard = Tmpfs::mount(&ro, "ro,size=1m");
        cases.push((ro, "Read-only file system", Some(guard)));
    }
    for (root, cause, _guard) in cases {
        let port = free_port();
        let mut cmd = DaemonBinary::command();
        cmd.arg("--root")
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "off", "--upstream", "http://127.0.0.1:9"]);
        let log = work.path().join("refused.log");
        let mut daemon = DaemonBinary::spawn(cmd, port, &log);
        let status = daemon
            .exited_within(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the daemon kept running on unwritable {}", root.display()));
        assert_eq!(status.code(), Some(2));
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(
            err.contains(&root.display().to_string()) && err.contains(cause),
            "{err}"
        );
    }
}

/// A committed blob corrupted on disk (one byte flipped, same length): `verify` through the
/// running daemon's admin endpoint finds it, moves it to `quarantine/`, reports it (exit 1) and
/// the next request fetches it again; on a stopped store, `verify` does the same to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_quarantines_a_corrupted_blob_online_and_offline_and_it_is_refetched() {
    let up = FakeUpstream::start().await;
    let contents = [data(256 * 1024, 96), data(256 * 1024, 97)];
    let digests: Vec<Digest> = contents
        .iter()
        .map(|c| up.blob(c.clone(), Behavior::default()))
        .collect();
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let root = cache.dir.path().join("store");
    let root_arg = root.to_str().unwrap().to_owned();
    for d in &digests {
        body(get(&cache.url(&blob_path(d))).await).await.unwrap();
    }
    let quarantined = |d: &Digest| root.join("quarantine").join(d.hex());

    flip_byte(&stored_path(&root, &digests[0]), 1000);
    let admin = cache.daemon.admin_url().unwrap();
    let (code, out, err) = within(tokio::task::spawn_blocking(move || {
        tool(&["verify", "--admin", &admin])
    }))
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("quarantined {}", digests[0])) && out.contains("1 quarantined"),
        "{out}"
    );
    assert!(quarantined(&digests[0]).exists());
    assert!(!stored_path(&root, &digests[0]).exists());
    assert!(!cache.daemon.app().store.contains(&digests[0]));
    let got = body(get(&cache.url(&blob_path(&digests[0]))).await)
        .await
        .unwrap();
    assert!(got[..] == contents[0][..]);
    assert_eq!(up.count(Method::GET, &digests[0].to_string()), 2);

    let _dir = cache.stop().await;
    flip_byte(&stored_path(&root, &digests[1]), 0);
    let (code, out, _) = tool(&["verify", "--root", &root_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("quarantined {}", digests[1])),
        "{out}"
    );
    assert!(quarantined(&digests[1]).exists());
    let expected: BTreeSet<String> = [digests[0].to_string()].into();
    assert_eq!(blobs_on_disk(&root), expected);
    let (code, out, _) = tool(&["verify", "--root", &root_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified 1 blob ("), "{out}");
}

/// With `verify_on_read`, a hit is rehashed as it is sent: a blob with one byte flipped on disk
/// is cut short (never a complete body), quarantined and counted, and the next request fetches
/// it upstream once, byte-exact. A range GET rechecks the whole file first: corrupted, it becomes
/// a miss and is answered from a fresh fetch.
#[tokio::test]
async fn verify_on_read_cuts_a_corrupted_blob_quarantines_it_and_refetches() {
    let up = FakeUpstream::start().await;
    let content = data(MIB + 12345, 98);
    let d = up.blob(content.clone(), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.store.verify_on_read = true;
    })
    .await;
    let root = cache.dir.path().join("store");
    let url = cache.url(&blob_path(&d));
    for _ in 0..2 {
        let got = body(get(&url).await).await.unwrap();
        assert!(got[..] == content[..], "miss, then a verified hit");
    }
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);

    flip_byte(&stored_path(&root, &d), 700_000);
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    let got = body(resp).await;
    assert!(got.is_err(), "a corrupted hit is cut, not sent complete");
    assert!(root.join("quarantine").join(d.hex()).exists());
    assert!(!stored_path(&root, &d).exists());
    let m = metrics(&cache).await;
    assert!(m.contains("cache_daemon_read_mismatches_total 1"), "{m}");
    let got = body(get(&url).await).await.unwrap();
    assert!(got[..] == content[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);

    flip_byte(&stored_path(&root, &d), 5);
    let resp = request("GET", &url, &[("range", "bytes=0-99")]).await;
    assert_eq!(resp.status(), 206);
    let got = body(resp).await.unwrap();
    assert!(got[..] == content[..100]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 3);
    assert!(std::fs::read(stored_path(&root, &d)).unwrap() == content);
    assert!(metrics(&cache)
        .await
        .contains("cache_daemon_read_mismatches_total 2"));

    // A manifest (kept in the store by digest) is checked whole before it is sent.
    let manifest = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","layers":[]}}"#);
    let m = up.manifest("test/app", None, DOCKER_MANIFEST, manifest.clone());
    let url = cache.url(&format!("/v2/test/app/manifests/{m}"));
    for _ in 0..2 {
        assert!(body(get(&url).await).await.unwrap()[..] == *manifest.as_bytes());
    }
    assert_eq!(up.count(Method::GET, &m.to_string()), 1);
    flip_byte(&stored_path(&root, &m), 3);
    assert!(body(get(&url).await).await.unwrap()[..] == *manifest.as_bytes());
    assert_eq!(up.count(Method::GET, &m.to_string()), 2);
    assert!(root.join("quarantine").join(m.hex()).exists());
}
