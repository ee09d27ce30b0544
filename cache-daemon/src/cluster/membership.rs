//! Who is in the cluster: the member list from its source (a static list, a DNS name
//! re-resolved every [`DNS_REFRESH`], a Kubernetes Service's Endpoints re-read as often, or a
//! file re-read when it changes), this node itself, and
//! which members are skipped for now: "down" for [`DOWN_FOR`] after a connection failed or
//! stalled, "bad" for [`BAD_FOR`] after bytes it sent failed the digest. Ownership is ranked
//! over the live members (listed, plus this node, minus skipped), so a dead node costs one
//! fallback and then drops out of everyone's ranking it is noticed by.
//!
//! Every node should see the same list; when views differ for a moment (a DNS answer not yet
//! everywhere, a file being rolled out), nothing fails: a node asked for a stripe serves it
//! whether or not it thinks it owns it, so a difference costs at most a second registry fetch
//! of the stripes whose owner differs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often a `--peers-dns` name is resolved again.
pub const DNS_REFRESH: Duration = Duration::from_secs(10);
/// How often a `--peers-file` is checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);
/// How long a member whose connection failed or stalled is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// How long a member that sent bytes failing the digest is skipped.
pub const BAD_FOR: Duration = Duration::from_secs(300);

/// A cluster member: the address its peer port is reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member(SocketAddr);

impl Member {
    /// Its peer address.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }
}

impl From<SocketAddr> for Member {
    fn from(a: SocketAddr) -> Self {
        Self(a)
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// `--peers`: fixed.
    Static(Vec<Member>),
    /// `--peers-dns NAME:PORT`: every address the name resolves to, at that port.
    Dns {
        /// The name (a Kubernetes headless Service, for instance).
        name: String,
        /// The peer port.
        port: u16,
    },
    /// `--peers-file`: one `IP:PORT` per line (`#` comments, blank lines), re-read on change.
    File(PathBuf),
    /// `--peers-kubernetes NAMESPACE/SERVICE:PORT`: a Service's Endpoints from the Kubernetes
    /// API, re-read like a DNS name (`super::endpoints`).
    Kubernetes(super::endpoints::ServiceRef),
}

/// In plain words, for the startup log: `the Endpoints of Kubernetes Service
/// cache-daemon/cache-daemon-peers, port 5052`.
impl std::fmt::Display for PeerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(members) => {
                write!(f, "the fixed list")?;
                for (i, m) in members.iter().enumerate() {
                    write!(f, "{}{m}", if i == 0 { " " } else { ", " })?;
                }
                Ok(())
            }
            Self::Dns { name, port } => {
                write!(f, "the addresses DNS gives for {name}, port {port}")
            }
            Self::File(path) => write!(f, "the file {}", path.display()),
            Self::Kubernetes(s) => write!(
                f,
                "the Endpoints of Kubernetes Service {}/{}, port {}",
                s.namespace, s.service, s.port
            ),
        }
    }
}

/// A member address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// Not `IP:PORT`.
    #[error("{0:?} is not IP:PORT (for example 10.0.0.5:5052; names go in --peers-dns)")]
    Malformed(String),
    /// An address no peer can be reached at.
    #[error(
        "{0} cannot be reached as a peer (port 0, an unspecified, multicast or broadcast address)"
    )]
    Unreachable(SocketAddr),
    /// Listed twice.
    #[error("{0} is listed twice")]
    Duplicate(SocketAddr),
    /// Not `NAME:PORT`.
    #[error("{0:?} is not NAME:PORT (for example cache-daemon-peers.kube-system.svc:5052)")]
    DnsName(String),
    /// Not `NAMESPACE/SERVICE:PORT`.
    #[error(
        "{0:?} is not NAMESPACE/SERVICE:PORT (for example cache-daemon/cache-daemon-peers:5052)"
    )]
    KubernetesService(String),
}

/// Parses one member address.
///
/// # Errors
/// [`MemberError::Malformed`] or [`MemberError::Unreachable`].
pub fn parse_member(s: &str) -> Result<Member, MemberError> {
    let addr: SocketAddr = s
        .trim()
        .parse()
        .map_err(|_| MemberError::Malformed(s.trim().chars().take(200).collect()))?;
    if !reachable(&addr) {
        return Err(MemberError::Unreachable(addr));
    }
    Ok(Member(addr))
}

/// Whether peers could connect to `addr` at all.
pub fn reachable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// Parses a member list (entries already split), refusing duplicates.
///
/// # Errors
/// The first bad entry.
pub fn parse_list<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Member>, MemberError> {
    let mut out: Vec<Member> = Vec::new();
    for e in entries {
        let m = parse_member(e)?;
        if out.contains(&m) {
            return Err(MemberError::Duplicate(m.0));
        }
        out.push(m);
    }
    Ok(out)
}

/// Parses a `--peers-file`'s text: one address per line, `#` comments and blank lines ignored.
///
/// # Errors
/// The first bad line's problem.
pub fn parse_file_text(text: &str) -> Result<Vec<Member>, MemberError> {
    parse_list(
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty()),
    )
}

/// Parses `NAME:PORT` for `--peers-dns`.
///
/// # Errors
/// [`MemberError::DnsName`].
pub fn parse_dns(s: &str) -> Result<(String, u16), MemberError> {
    let bad = || MemberError::DnsName(s.chars().take(200).collect());
    let (name, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if port == 0 || !name_ok {
        return Err(bad());
    }
    Ok((name.to_owned(), port))
}

/// Why a member is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Down,
    Bad,
}

/// The member list and the skip marks. std `Mutex`es: held to copy or replace the list and to
/// set or read a mark; never across `.await`.
#[derive(Debug)]
pub struct Membership {
    me: Member,
    source: PeerSource,
    listed: Mutex<Vec<Member>>,
    skipped: Mutex<HashMap<Member, (Skip, Instant)>>,
    /// The file's modification time and length when last read.
    file_seen: Mutex<Option<(SystemTime, u64)>>,
}

impl Membership {
    /// Membership of `me` with members from `source`; a static list is known at once, DNS and
    /// file lists after [`Membership::refresh`].
    pub fn new(me: Member, source: PeerSource) -> Self {
        let listed = match &source {
            PeerSource::Static(list) => list.clone(),
            _ => Vec::new(),
        };
        Self {
            me,
            source,
            listed: Mutex::new(listed),
            skipped: Mutex::new(HashMap::new()),
            file_seen: Mutex::new(None),
        }
    }

    /// This node.
    pub fn me(&self) -> Member {
        self.me
    }

    /// How often [`Membership::refresh`] should run; `None` for a static list.
    pub fn refresh_every(&self) -> Option<Duration> {
        match self.source {
            PeerSource::Static(_) => None,
            PeerSource::Dns { .. } | PeerSource::Kubernetes(_) => Some(DNS_REFRESH),
            PeerSource::File(_) => Some(FILE_POLL),
        }
    }

    /// Reads the source again (DNS lookup, or the file when it changed). A failure keeps the
    /// previous list and is returned for the caller to log.
    ///
    /// # Errors
    /// What went wrong, in plain words.
    pub async fn refresh(&self) -> Result<(), String> {
        let fresh = match &self.source {
            PeerSource::Static(_) => return Ok(()),
            PeerSource::Dns { name, port } => {
                let addrs = tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .map_err(|e| format!("resolve {name}: {e}"))?;
                let mut members: Vec<Member> = addrs.filter(reachable).map(Member).collect();
                members.sort_unstable();
                members.dedup();
                members
            }
            PeerSource::Kubernetes(service) => service.members().await?,
            PeerSource::File(path) => match self.read_file_if_changed(path).await? {
                Some(members) => members,
                None => return Ok(()),
            },
        };
        let mut listed = self.listed.lock().expect("membership mutex poisoned");
        if *listed != fresh {
            tracing::info!(members = fresh.len(), "cluster member list changed");
            *listed = fresh;
        }
        Ok(())
    }

    async fn read_file_if_changed(&self, path: &Path) -> Result<Option<Vec<Member>>, String> {
        let shown = path.display();
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| format!("read peers file {shown}: {e}"))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if *self.file_seen.lock().expect("membership mutex poisoned") == Some(stamp) {
            return Ok(None);
        }
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("read peers file {shown}: {e}"))?;
        let members = parse_file_text(&text).map_err(|e| format!("peers file {shown}: {e}"))?;
        *self.file_seen.lock().expect("membership mutex poisoned") = Some(stamp);
        Ok(Some(members))
    }

    /// Members known from the source, plus this node, sorted.
    pub fn known(&self) -> Vec<Member> {
        let mut all = self
            .listed
            .lock()
            .expect("membership mutex poisoned")
            .clone();
        if !all.contains(&self.me) {
            all.push(self.me);
        }
        all.sort_unstable();
        all
    }

    /// Known members not skipped right now (this node is never skipped).
    pub fn live(&self) -> Vec<Member> {
        let now = Instant::now();
        let mut skipped = self.skipped.lock().expect("membership mutex poisoned");
        skipped.retain(|_, (_, until)| *until > now);
        let mut live = self.known();
        live.retain(|m| *m == self.me || !skipped.contains_key(m));
        live
    }

    /// `member` failed to connect or stalled: skip it for [`DOWN_FOR`] (a bad mark stays).
    pub fn mark_down(&self, member: Member) {
        if member == self.me {
            return;
        }
        let mut skipped = self.skipped.lock().expect("membership mutex poisoned");
        let entry = skipped
            .entry(member)
            .or_insert((Skip::Down, Instant::now()));
        if entry.0 == Skip::Down {
            *entry = (Skip::Down, Instant::now() + DOWN_FOR);
        }
    }

    /// `member` sent bytes that failed the digest: skip it for [`BAD_FOR`].
    pub fn mark_bad(&self, member: Member) {
        if member == self.me {
            return;
        }
        self.skipped
            .lock()
            .expect("membership mutex poisoned")
            .insert(member, (Skip::Bad, Instant::now() + BAD_FOR));
    }

    /// Members currently marked bad.
    pub fn bad_count(&self) -> usize {
        let now = Instant::now();
        self.skipped
            .lock()
            .expect("membership mutex poisoned")
            .values()
            .filter(|(s, until)| *s == Skip::Bad && *until > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_source_reads_in_plain_words() {
        let kube = PeerSource::Kubernetes(super::super::endpoints::ServiceRef {
            namespace: "cache-daemon".into(),
            service: "cache-daemon-peers".into(),
            port: 5052,
        });
        for (source, want) in [
            (
                kube,
                "the Endpoints of Kubernetes Service cache-daemon/cache-daemon-peers, port 5052",
            ),
            (
                PeerSource::Static(vec![m("10.0.0.5:5052"), m("10.0.0.6:5052")]),
                "the fixed list 10.0.0.5:5052, 10.0.0.6:5052",
            ),
            (
                PeerSource::Dns {
                    name: "peers.svc".into(),
                    port: 5052,
                },
                "the addresses DNS gives for peers.svc, port 5052",
            ),
            (PeerSource::File("/etc/peers".into()), "the file /etc/peers"),
        ] {
            assert_eq!(source.to_string(), want);
        }
    }

    fn m(s: &str) -> Member {
        parse_member(s).unwrap()
    }

    #[test]
    fn member_lists_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_list(["10.0.0.1:5052", "[fd00::2]:5052"]).unwrap(),
            vec![m("10.0.0.1:5052"), m("[fd00::2]:5052")]
        );
        let cases = [
            ("node-a:5052", "is not IP:PORT"),
            ("10.0.0.1", "is not IP:PORT"),
            ("10.0.0.1:0", "cannot be reached"),
            ("0.0.0.0:5052", "cannot be reached"),
            ("224.0.0.1:5052", "cannot be reached"),
            ("255.255.255.255:5052", "cannot be reached"),
        ];
        for (input, want) in cases {
            let err = parse_list([input]).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let dup = parse_list(["10.0.0.1:5052", "10.0.0.2:5052", "10.0.0.1:5052"]);
        assert_eq!(
            dup,
            Err(MemberError::Duplicate("10.0.0.1:5052".parse().unwrap()))
        );
        assert_eq!(
            parse_file_text("# nodes\n10.0.0.1:5052\n\n10.0.0.2:5052 # rack 2\n").unwrap(),
            vec![m("10.0.0.1:5052"), m("10.0.0.2:5052")]
        );
    }

    #[test]
    fn dns_names_parse() {
        assert_eq!(
            parse_dns("peers.svc.cluster.local:5052").unwrap(),
            ("peers.svc.cluster.local".to_owned(), 5052)
        );
        for bad in ["peers", "peers:0", ":5052", "pe ers:5052", "peers:x"] {
            assert!(parse_dns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skipped_members_leave_the_live_set_but_never_this_node() {
        let me = m("10.0.0.1:5052");
        let other = m("10.0.0.2:5052");
        let third = m("10.0.0.3:5052");
        let ms = Membership::new(me, PeerSource::Static(vec![other, third]));
        assert_eq!(ms.live(), vec![me, other, third]);
        ms.mark_down(other);
        ms.mark_bad(third);
        ms.mark_down(me);
        assert_eq!(ms.live(), vec![me]);
        assert_eq!(ms.bad_count(), 1);
        // A down mark does not shorten a bad one.
        ms.mark_down(third);
        assert_eq!(ms.bad_count(), 1);
        assert_eq!(ms.known().len(), 3);
    }

    #[tokio::test]
    async fn a_watched_file_is_reread_when_it_changes_and_a_bad_edit_keeps_the_old_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        std::fs::write(&path, "10.0.0.2:5052\n").unwrap();
        let me = m("10.0.0.1:5052");
        let ms = Membership::new(me, PeerSource::File(path.clone()));
        ms.refresh().await.unwrap();
        assert_eq!(ms.known(), vec![me, m("10.0.0.2:5052")]);
        std::fs::write(&path, "10.0.0.2:5052\n10.0.0.3:5052\n").unwrap();
        ms.refresh().await.unwrap();
        assert_eq!(ms.known().len(), 3);
        std::fs::write(&path, "10.0.0.2:5052\nnonsense and more\n").unwrap();
        let err = ms.refresh().await.unwrap_err();
        assert!(err.contains("is not IP:PORT"), "{err}");
        assert_eq!(ms.known().len(), 3);
    }
}
