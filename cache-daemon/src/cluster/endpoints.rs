//! Cluster members from the Kubernetes API (`--peers-kubernetes NAMESPACE/SERVICE:PORT`): every
//! address in the Service's Endpoints, ready or not, at PORT, read with the pod's own service
//! account (`GET /api/v1/namespaces/NAMESPACE/endpoints/SERVICE`; RBAC: `get` on `endpoints` in
//! that namespace, which deploy/kubernetes/daemonset.yaml grants and nothing more).
//!
//! For clusters without cluster DNS, and for nodes that should not depend on it: a DaemonSet on
//! the host network asks the API server, which every node reaches anyway. Re-read every
//! [`super::membership::DNS_REFRESH`], like a DNS name; a failed read keeps the last list and
//! is logged by the caller. The service account's files are read again on every refresh, so a
//! rotated token is picked up.

use serde_json::Value;
use stampede_kube::{Access, KubeClient};

use super::membership::{reachable, Member, MemberError};

/// A Service whose Endpoints list the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub service: String,
    /// The peer port every member listens on.
    pub port: u16,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// Parses `NAMESPACE/SERVICE:PORT`.
///
/// # Errors
/// [`MemberError::KubernetesService`] when it is not that shape, a name is not a Kubernetes
/// name (lower-case letters, digits and `-`, at most 63 characters) or the port is 0.
pub fn parse(s: &str) -> Result<ServiceRef, MemberError> {
    let bad = || MemberError::KubernetesService(s.trim().chars().take(200).collect());
    let (names, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let (namespace, service) = names.split_once('/').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.starts_with('-')
            && !n.ends_with('-')
    };
    if port == 0 || !name_ok(namespace) || !name_ok(service) {
        return Err(bad());
    }
    Ok(ServiceRef {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port,
    })
}

impl ServiceRef {
    /// The members listed now, sorted and without duplicates.
    ///
    /// # Errors
    /// Why the list could not be had, in plain words (not in a pod, no rights, no such
    /// Service, API server unreachable).
    pub async fn members(&self) -> Result<Vec<Member>, String> {
        let failed =
            |e: stampede_kube::KubeError| format!("list members from Endpoints {self}: {e}");
        let client = Access::in_cluster()
            .and_then(KubeClient::new)
            .map_err(failed)?;
        let path = format!(
            "/api/v1/namespaces/{}/endpoints/{}",
            self.namespace, self.service
        );
        let endpoints = client.get(&path).await.map_err(failed)?;
        Ok(self.members_of(&endpoints))
    }

    /// The members an Endpoints object lists: every IP in every subset's `addresses` and
    /// `notReadyAddresses`, at this port.
    pub fn members_of(&self, endpoints: &Value) -> Vec<Member> {
        let mut out: Vec<Member> = endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|subset| {
                ["addresses", "notReadyAddresses"]
                    .into_iter()
                    .filter_map(|k| subset[k].as_array())
                    .flatten()
            })
            .filter_map(|a| a["ip"].as_str()?.parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, self.port))
            .filter(reachable)
            .map(Member::from)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_service_and_port() {
        let r = parse("cache-daemon/cache-daemon-peers:5052").unwrap();
        assert_eq!(r.namespace, "cache-daemon");
        assert_eq!(r.service, "cache-daemon-peers");
        assert_eq!(r.port, 5052);
        assert_eq!(r.to_string(), "cache-daemon/cache-daemon-peers:5052");
        for bad in [
            "cache-daemon-peers:5052",
            "ns/svc",
            "ns/svc:0",
            "ns/svc:http",
            "NS/svc:1",
            "ns/sv_c:1",
            "/svc:1",
            "ns/:1",
            "ns/-svc:1",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("NAMESPACE/SERVICE:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_ready_and_not_ready_addresses_at_the_peer_port() {
        let r = parse("ns/svc:5052").unwrap();
        let endpoints: Value = serde_json::json!({
            "subsets": [
                {"addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}],
                 "notReadyAddresses": [{"ip": "10.0.0.3"}],
                 "ports": [{"name": "peer", "port": 5052}]},
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "0.0.0.0"}, {"ip": "not-an-ip"}]}
            ]
        });
        let members: Vec<String> = r
            .members_of(&endpoints)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(members, ["10.0.0.1:5052", "10.0.0.2:5052", "10.0.0.3:5052"]);
        assert!(r
            .members_of(&serde_json::json!({"kind": "Endpoints"}))
            .is_empty());
    }
}
