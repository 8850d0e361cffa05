//! The SSRF guard: where an upstream set through the admin API may point.
//!
//! A provider token or operator who can set an upstream could otherwise make the gateway
//! (with its network position) call loopback services, the cloud metadata endpoint, private
//! networks, the admin listener or our RPC node, and relay the answer to a paying agent.
//! Providers from the file are trusted (whoever edits the file owns the host anyway).
//!
//! Two checks, one rule set (`classify`):
//! - when the provider is stored (`UpstreamGuard::check_store`): the host is resolved and every
//!   address must be public; the refusal names the rule and the host as typed, never the
//!   addresses it resolved to;
//! - at every connection to an admin-created provider's upstream: the upstream client of such
//!   providers resolves names through `GuardedResolver`, which refuses the connection when any
//!   answer falls in a refused class. The addresses checked are the ones connected to, so a DNS
//!   answer that changed since the provider was stored (rebinding) cannot reach inside. An IP
//!   literal never reaches a resolver; it cannot change either, and `check_literal` re-checks it
//!   per request (the allow-list may have changed with the file).
//!
//! `[admin] upstream_allow` lists hosts (any port) or host:port pairs exempt from the address
//! classes and the RPC-host rule (its entries are `crate::config::AllowEntry`: the guard
//! depends on the configuration, never the other way round); nothing exempts the exact host and
//! port of the RPC node or of our listeners (`crate::config::upstream_conflict`, applied to the
//! file too).
//!
//! This module must not know HTTP status codes (`GatewayError::UpstreamRefused` is mapped in
//! `crate::error`) and reads no environment.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use secrecy::ExposeSecret as _;

use crate::config::{AllowEntry, Config, UpstreamConflict, normal_host, upstream_conflict};

/// How long a store-time or connect-time DNS lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream is refused. `code()` is the stable name shown to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16 (the cloud metadata address 169.254.169.254 among them), fe80::/10.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT).
    SharedAddressSpace,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// The host of a configured network's `rpc_url` (any port), or its address.
    RpcHost,
    /// The exact host and port of a network's RPC node.
    RpcNode,
    /// The admin listener.
    AdminListener,
    /// The gateway's own public listener.
    OwnListener,
    /// The host does not resolve (within `LOOKUP_TIMEOUT`).
    Unresolvable,
}

impl Rule {
    /// The stable name of the rule.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Loopback => "loopback",
            Rule::LinkLocal => "link_local",
            Rule::Private => "private",
            Rule::SharedAddressSpace => "shared_address_space",
            Rule::Unspecified => "unspecified",
            Rule::Broadcast => "broadcast",
            Rule::Multicast => "multicast",
            Rule::RpcHost => "rpc_host",
            Rule::RpcNode => "rpc_node",
            Rule::AdminListener => "admin_listener",
            Rule::OwnListener => "own_listener",
            Rule::Unresolvable => "unresolvable",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Rule::Loopback => "resolves to a loopback address",
            Rule::LinkLocal => "resolves to a link-local address (cloud metadata among them)",
            Rule::Private => "resolves to a private address",
            Rule::SharedAddressSpace => "resolves to a carrier-grade NAT address (100.64.0.0/10)",
            Rule::Unspecified => "resolves to an unspecified address",
            Rule::Broadcast => "resolves to the broadcast address",
            Rule::Multicast => "resolves to a multicast address",
            Rule::RpcHost => "is the host of a configured network's RPC node",
            Rule::RpcNode => "is a configured network's RPC node",
            Rule::AdminListener => "is the admin listener",
            Rule::OwnListener => "is the gateway's own listener",
            Rule::Unresolvable => "does not resolve",
        }
    }

    /// Whether `[admin] upstream_allow` can exempt a host from this rule.
    fn exemptible(self) -> bool {
        !matches!(self, Rule::RpcNode | Rule::AdminListener | Rule::OwnListener)
    }
}

/// A refused upstream: the rule and the host as the operator typed it (never an address it
/// resolved to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule.
    pub rule: Rule,
    /// The upstream's host, as given.
    pub host: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream host {} {} (rule {})", self.host, self.rule.says(), self.rule.code())?;
        if self.rule.exemptible() && self.rule != Rule::Unresolvable {
            f.write_str("; an operator can allow it with [admin] upstream_allow in the configuration file")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

/// The address class an upstream may not reach, if any.
pub fn classify(ip: IpAddr) -> Option<Rule> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address it maps.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Rule> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some(Rule::Loopback)
    } else if ip.is_link_local() {
        Some(Rule::LinkLocal)
    } else if ip.is_private() {
        Some(Rule::Private)
    } else if a == 100 && (b & 0xc0) == 64 {
        Some(Rule::SharedAddressSpace)
    } else if a == 0 {
        Some(Rule::Unspecified)
    } else if ip.is_broadcast() {
        Some(Rule::Broadcast)
    } else if ip.is_multicast() {
        Some(Rule::Multicast)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Rule> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(Rule::Loopback)
    } else if ip.is_unspecified() {
        Some(Rule::Unspecified)
    } else if (first & 0xffc0) == 0xfe80 {
        Some(Rule::LinkLocal)
    } else if (first & 0xfe00) == 0xfc00 {
        Some(Rule::Private)
    } else if ip.is_multicast() {
        Some(Rule::Multicast)
    } else {
        None
    }
}

/// Resolves a host name to addresses. The system resolver in production; tests substitute
/// answers (a DNS answer that changes between store and connect).
pub trait Lookup: Send + Sync {
    /// The addresses of `host`.
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// `getaddrinfo` through tokio.
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The guard: the allow-list, what the gateway itself listens on and talks to, and the
/// resolver it checks names with.
pub struct UpstreamGuard {
    allow: Vec<AllowEntry>,
    /// Hosts of the networks' `rpc_url`s, normalised.
    rpc_hosts: Vec<String>,
    /// Listener addresses that are not unspecified (an unspecified one is covered by the
    /// address classes on the loopback side; its public addresses are not enumerated).
    listeners: Vec<(IpAddr, Rule)>,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for UpstreamGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The RPC hosts are left out: hosted RPC URLs are secrets as a whole.
        f.debug_struct("UpstreamGuard").field("allow", &self.allow).finish_non_exhaustive()
    }
}

impl UpstreamGuard {
    /// The guard of `config`, resolving with `lookup`.
    pub fn new(config: &Config, lookup: Arc<dyn Lookup>) -> UpstreamGuard {
        let rpc_hosts = config
            .networks
            .iter()
            .filter_map(|n| Url::parse(n.rpc_url.expose_secret()).ok())
            .filter_map(|u| u.host_str().map(normal_host))
            .collect();
        let mut listeners = vec![(config.server.listen.ip(), Rule::OwnListener)];
        if config.admin.enabled {
            listeners.push((config.admin.listen.ip(), Rule::AdminListener));
        }
        listeners.retain(|(ip, _)| !ip.is_unspecified());
        UpstreamGuard { allow: config.admin.upstream_allow.clone(), rpc_hosts, listeners, lookup }
    }

    fn allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.allow.iter().any(|a| a.allows(host, port))
    }

    /// Whether any entry names `host`, whatever its port. The resolver sees no port; the
    /// port was checked when the provider was stored, and cannot change without a new check.
    fn allowed_any_port(&self, host: &str) -> bool {
        self.allow.iter().any(|a| a.names_host(host))
    }

    fn check_address(&self, ip: IpAddr) -> Option<Rule> {
        if let Some(rule) = classify(ip) {
            return Some(rule);
        }
        if let Some((_, rule)) = self.listeners.iter().find(|(l, _)| *l == ip) {
            return Some(*rule);
        }
        if self.rpc_hosts.iter().any(|h| h.parse::<IpAddr>().is_ok_and(|r| r == ip)) {
            return Some(Rule::RpcHost);
        }
        None
    }

    /// The check when a provider is stored through the admin API: the gateway's own
    /// endpoints, then (unless allow-listed) the RPC hosts and every resolved address.
    pub async fn check_store(&self, config: &Config, upstream: &Url) -> Result<(), Refusal> {
        let typed = upstream.host_str().unwrap_or_default().to_owned();
        let refuse = |rule| Err(Refusal { rule, host: typed.clone() });
        match upstream_conflict(upstream, &config.server, &config.admin, &config.networks) {
            Some(UpstreamConflict::RpcNode { .. }) => return refuse(Rule::RpcNode),
            Some(UpstreamConflict::AdminListener) => return refuse(Rule::AdminListener),
            Some(UpstreamConflict::OwnListener) => return refuse(Rule::OwnListener),
            None => {}
        }
        let host = normal_host(&typed);
        if self.allowed(&host, upstream.port_or_known_default()) {
            return Ok(());
        }
        if self.rpc_hosts.contains(&host) {
            return refuse(Rule::RpcHost);
        }
        let addresses = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.lookup(&host)).await {
                Ok(Ok(a)) if !a.is_empty() => a,
                _ => return refuse(Rule::Unresolvable),
            },
        };
        match addresses.into_iter().find_map(|ip| self.check_address(ip)) {
            Some(rule) => refuse(rule),
            None => Ok(()),
        }
    }

    /// The per-request check of an admin-created provider whose upstream is an IP literal
    /// (names are checked by `GuardedResolver` at connect time).
    pub fn check_literal(&self, upstream: &Url) -> Result<(), Refusal> {
        let typed = upstream.host_str().unwrap_or_default();
        let host = normal_host(typed);
        let Ok(ip) = host.parse::<IpAddr>() else { return Ok(()) };
        if self.allowed(&host, upstream.port_or_known_default()) {
            return Ok(());
        }
        match self.check_address(ip) {
            Some(rule) => Err(Refusal { rule, host: typed.to_owned() }),
            None => Ok(()),
        }
    }

    /// The resolver of the guarded upstream client.
    pub fn resolver(self: &Arc<Self>) -> GuardedResolver {
        GuardedResolver(self.clone())
    }
}

/// A `reqwest` resolver that refuses a name any of whose addresses the guard refuses, so the
/// addresses connected to are the ones checked.
#[derive(Debug, Clone)]
pub struct GuardedResolver(Arc<UpstreamGuard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let typed = name.as_str().to_owned();
        Box::pin(async move {
            let host = normal_host(&typed);
            let addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, guard.lookup.lookup(&host)).await {
                Ok(r) => r?,
                Err(_) => return Err(Box::new(Refusal { rule: Rule::Unresolvable, host: typed }) as _),
            };
            if !guard.allowed_any_port(&host)
                && let Some(rule) = addresses.iter().find_map(|ip| guard.check_address(*ip))
            {
                tracing::warn!(host = %typed, rule = rule.code(), "SSRF guard refused a connection to an admin-created upstream");
                return Err(Box::new(Refusal { rule, host: typed }) as _);
            }
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The upstream client of admin-created providers: the ordinary one's settings, the guard's
/// resolver, and no proxy (through a proxy the name would be resolved by the proxy,
/// unchecked).
pub fn guarded_client(
    tls: &tollgate_tls::ClientTls,
    guard: &Arc<UpstreamGuard>,
) -> Result<reqwest::Client, reqwest::Error> {
    tls.reqwest_builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(guard.resolver()))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every refused class is classified, IPv4-mapped IPv6 included, and public
    // addresses pass.
    #[test]
    fn classes() {
        let cases = [
            ("127.0.0.1", Some(Rule::Loopback)),
            ("::1", Some(Rule::Loopback)),
            ("::ffff:127.0.0.1", Some(Rule::Loopback)),
            ("169.254.169.254", Some(Rule::LinkLocal)),
            ("fe80::1", Some(Rule::LinkLocal)),
            ("10.1.2.3", Some(Rule::Private)),
            ("172.16.0.1", Some(Rule::Private)),
            ("172.31.255.255", Some(Rule::Private)),
            ("192.168.1.1", Some(Rule::Private)),
            ("fd00::1", Some(Rule::Private)),
            ("fc00::1", Some(Rule::Private)),
            ("100.64.0.1", Some(Rule::SharedAddressSpace)),
            ("100.127.255.254", Some(Rule::SharedAddressSpace)),
            ("0.0.0.0", Some(Rule::Unspecified)),
            ("::", Some(Rule::Unspecified)),
            ("255.255.255.255", Some(Rule::Broadcast)),
            ("224.0.0.1", Some(Rule::Multicast)),
            ("ff02::1", Some(Rule::Multicast)),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
        ];
        for (ip, rule) in cases {
            assert_eq!(classify(ip.parse().unwrap()), rule, "{ip}");
        }
    }

    /// Answers from a table the test changes: a DNS answer that changes between the store
    /// check and the connection.
    struct Table(std::sync::Mutex<Vec<(String, IpAddr)>>);

    impl Lookup for Table {
        fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let found: Vec<IpAddr> =
                self.0.lock().unwrap().iter().filter(|(h, _)| h == host).map(|(_, ip)| *ip).collect();
            Box::pin(
                async move { if found.is_empty() { Err(std::io::Error::other("no such host")) } else { Ok(found) } },
            )
        }
    }

    fn config(allow: &str) -> Config {
        let text = format!(
            "[admin]\nupstream_allow = [{allow}]\n\n[[networks]]\nid = \"eip155:8453\"\n\
             rpc_url = \"https://rpc.example:8545/KEY\"\n\
             asset = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\"\neip712_name = \"USD Coin\"\neip712_version = \"2\"\n"
        );
        Config::parse(&text, &|_| None).unwrap()
    }

    // Goal: a name stored while it resolved to a public address is refused at connect time once
    // its DNS answer points at loopback (rebinding): the guarded client never connects, while an
    // allow-listed name resolving to loopback is served by the same client.
    #[tokio::test]
    async fn connect_time_check_follows_the_dns_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                });
            }
        });
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let table = Arc::new(Table(std::sync::Mutex::new(vec![
            ("rebind.test".to_owned(), public),
            ("trusted.test".to_owned(), loopback),
        ])));
        let config = config(&format!("\"trusted.test:{port}\""));
        let guard = Arc::new(UpstreamGuard::new(&config, table.clone()));
        let rebind: Url = format!("http://rebind.test:{port}/").parse().unwrap();
        let trusted: Url = format!("http://trusted.test:{port}/").parse().unwrap();
        assert_eq!(guard.check_store(&config, &rebind).await, Ok(()), "public when stored");
        assert_eq!(guard.check_store(&config, &trusted).await, Ok(()), "allow-listed");
        let other_port: Url = format!("http://trusted.test:{}/", port.wrapping_add(1)).parse().unwrap();
        assert_eq!(guard.check_store(&config, &other_port).await.map_err(|r| r.rule), Err(Rule::Loopback));
        // The RPC node's host is refused on any port, without a lookup.
        let rpc: Url = "https://rpc.example/".parse().unwrap();
        assert_eq!(guard.check_store(&config, &rpc).await.map_err(|r| r.rule), Err(Rule::RpcHost));

        // The answer changes to loopback after the provider was stored.
        table.0.lock().unwrap()[0].1 = loopback;
        let client = guarded_client(&tollgate_tls::ClientTls::new(None).unwrap(), &guard).unwrap();
        let err = client.get(rebind.clone()).send().await.expect_err("refused at connect time");
        let chain = format!("{:?}", err);
        assert!(chain.contains("Refusal { rule: Loopback"), "{chain}");
        assert!(!chain.contains("127.0.0.1"), "the resolved address is not repeated: {chain}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing connected");
        // A store-time check now refuses it too.
        assert_eq!(guard.check_store(&config, &rebind).await.map_err(|r| r.rule), Err(Rule::Loopback));

        let ok = client.get(trusted).send().await.expect("allow-listed name served");
        assert_eq!(ok.status(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

        // An IP literal reaches no resolver: it is checked per request.
        let literal: Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        assert_eq!(guard.check_literal(&literal).map_err(|r| r.rule), Err(Rule::Loopback));
        assert_eq!(guard.check_literal(&rebind), Ok(()), "names are left to the resolver");
    }
}
