//! Command-line flags. Every flag can also be set with an `SVC_PROXY_*` environment variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::iface::Cidr;

/// A node-local ClusterIP dataplane: listens on Service ClusterIPs and NodePorts, balances
/// connections and requests over ready endpoints, answers cluster DNS, and serves admin HTTP.
#[derive(Clone, Debug, Parser)]
#[command(name = "svc-proxy", version, about)]
pub struct Args {
    /// Serve the Services and EndpointSlices of this YAML file or directory (reloaded when it
    /// changes) instead of watching the Kubernetes API. Without it, the API is watched with
    /// `KUBECONFIG` or the in-cluster config.
    #[arg(long, env = "SVC_PROXY_MANIFESTS", value_name = "FILE_OR_DIR")]
    pub manifests: Option<PathBuf>,

    /// Watch only this namespace (kube source; default: all namespaces).
    #[arg(long, env = "SVC_PROXY_NAMESPACE")]
    pub namespace: Option<String>,

    /// Threads serving TCP and HTTP connections, each a single-threaded runtime (default: one
    /// per CPU). Each listener is one socket, accepted from on one of them, which hands each
    /// connection to the least-loaded thread. With 1, everything runs on one thread; with
    /// more, the control plane (watches, DNS, admin, UDP) has a thread of its own.
    #[arg(long, env = "SVC_PROXY_THREADS")]
    pub threads: Option<usize>,

    /// The cluster DNS domain.
    #[arg(
        long,
        env = "SVC_PROXY_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// This node's name, for `Local` traffic policies and PreferSameNode.
    #[arg(long, env = "SVC_PROXY_NODE_NAME")]
    pub node_name: Option<String>,

    /// This node's zone, for PreferSameZone and topology hints.
    #[arg(long, env = "SVC_PROXY_ZONE")]
    pub zone: Option<String>,

    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`, `/debug/services`).
    #[arg(long, env = "SVC_PROXY_ADMIN_ADDR", default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,

    /// Serve cluster DNS (UDP and TCP) on this address; off unless given.
    #[arg(long, env = "SVC_PROXY_DNS_ADDR")]
    pub dns_addr: Option<SocketAddr>,

    /// TTL of DNS answers, in seconds.
    #[arg(long, env = "SVC_PROXY_DNS_TTL", default_value_t = 5)]
    pub dns_ttl: u32,

    /// Forward names outside the cluster domain to this upstream resolver (`IP` or
    /// `IP:PORT`). Without it they are REFUSED: the proxy is not an open resolver.
    #[arg(long, env = "SVC_PROXY_DNS_FORWARD", value_parser = parse_upstream)]
    pub dns_forward: Option<SocketAddr>,

    /// Listen on this address's NodePorts for NodePort and LoadBalancer Services; off
    /// unless given (e.g. `0.0.0.0` or the node IP).
    #[arg(long, env = "SVC_PROXY_NODEPORT_ADDR")]
    pub nodeport_addr: Option<IpAddr>,

    /// Make this Service CIDR local with one route (`ip route add local CIDR dev lo`), so that
    /// every ClusterIP in it can be listened on with no per-address setup. Repeat it (or give
    /// a comma-separated list) for dual stack: `--service-cidr 10.96.0.0/12 --service-cidr
    /// fd00:10:96::/112`. Needs NET_ADMIN; the route stays when the proxy exits.
    #[arg(
        long,
        env = "SVC_PROXY_SERVICE_CIDR",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub service_cidr: Vec<Cidr>,

    /// Add and remove ClusterIPs on this interface (like kube-proxy IPVS's `kube-ipvs0`), one
    /// address each. An existing interface of any type is used as is; a missing one is created
    /// as a dummy. With `--service-cidr`, only addresses outside the CIDRs (external and
    /// load-balancer IPs) are added. Addresses that were there before are never removed.
    #[arg(long, env = "SVC_PROXY_MANAGE_INTERFACE", value_name = "NAME")]
    pub manage_interface: Option<String>,

    /// Reset TCP flows whose endpoint was removed from the Service (default: they keep
    /// running until either side closes).
    #[arg(long, env = "SVC_PROXY_RESET_REMOVED")]
    pub reset_removed: bool,

    /// Close TCP flows (and upgraded HTTP connections, e.g. WebSocket) idle for this long:
    /// nothing moved in either direction. The default of 1 h is Envoy's TCP proxy idle
    /// timeout; kube-proxy's conntrack keeps established flows for 24 h. Each idle flow costs
    /// a few KiB (no copy buffer is held while it is idle) and two file descriptors.
    #[arg(long, env = "SVC_PROXY_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Forget UDP flows idle for this long.
    #[arg(long, env = "SVC_PROXY_UDP_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,

    /// UDP flows in the whole proxy (each holds a socket). When all are in use, a new flow
    /// evicts an idle one of its listener (second chance, oldest first), as conntrack does.
    #[arg(long, env = "SVC_PROXY_UDP_MAX_FLOWS", default_value_t = 16_384)]
    pub udp_max_flows: usize,

    /// UDP flows from one client IP on one listener; more evict that client's idle flows, so
    /// one client cannot push out everybody else's.
    #[arg(
        long,
        env = "SVC_PROXY_UDP_MAX_FLOWS_PER_CLIENT",
        default_value_t = 1_024
    )]
    pub udp_max_flows_per_client: usize,

    /// Refuse new TCP connections and UDP flows while the proxy's resident memory is above
    /// this (e.g. `400MiB`; sampled every 250 ms); flows already open carry on. Off unless
    /// given; set it below the container's memory limit so the proxy sheds load instead of
    /// being OOM-killed.
    #[arg(long, env = "SVC_PROXY_MEMORY_CEILING", value_parser = crate::limits::parse_bytes)]
    pub memory_ceiling: Option<u64>,

    /// Give up connecting to one endpoint after this long, and try another.
    #[arg(long, env = "SVC_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// On SIGTERM, wait this long for open flows to finish before exiting.
    #[arg(long, env = "SVC_PROXY_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Per-direction copy buffer of each TCP flow, in bytes.
    #[arg(long, env = "SVC_PROXY_BUFFER_SIZE", default_value_t = 64 * 1024)]
    pub buffer_size: usize,

    /// Also export per endpoint series (`svc_proxy_endpoint_picks_total`,
    /// `svc_proxy_endpoint_errors_total`): one per endpoint of every Service port with traffic,
    /// which at cluster scale is a lot. By default series are per Service port only.
    #[arg(long, env = "SVC_PROXY_METRICS_ENDPOINTS")]
    pub metrics_endpoints: bool,

    /// Log filter (`tracing_subscriber::EnvFilter` syntax; hickory-server logs every query at
    /// info, hence its own level); `RUST_LOG` takes precedence.
    #[arg(
        long,
        env = "SVC_PROXY_LOG",
        default_value = "info,hickory_server=warn"
    )]
    pub log: String,

    /// HTTP mode: how long an endpoint may take to send its response head, counted from the
    /// end of the request; the client then gets 504 and the endpoint counts as failed (outlier
    /// ejection). The response body is not timed. `0` disables it. Envoy's default route
    /// timeout.
    #[arg(long, env = "SVC_PROXY_UPSTREAM_RESPONSE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,

    /// HTTP mode: close a client connection whose request head is not complete this long after
    /// it opened or after its previous response (keep-alive), including connections that send
    /// nothing at all (and HTTP/2 connections until their first request). `0` disables it.
    #[arg(long, env = "SVC_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// HTTP mode: the largest request head accepted (request line and headers; an HTTP/2
    /// header list); larger ones get 431. At least 8KiB. Envoy's default.
    #[arg(long, env = "SVC_PROXY_MAX_REQUEST_HEADERS", default_value = "60KiB", value_parser = parse_header_limit)]
    pub max_request_headers: u64,

    /// HTTP mode: close kept-alive HTTP/1.1 connections to endpoints after this long unused.
    /// `0` disables it. hyper-util's pooled client's default.
    #[arg(long, env = "SVC_PROXY_UPSTREAM_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// HTTP mode: what serves HTTP/1.1 clients on `http` ports. `direct` forwards plain
    /// requests (origin form, no body or a `Content-Length` body of up to 64 KiB with its
    /// head, no hop-by-hop headers but `Connection`) itself, as bytes, and hands a connection
    /// to hyper at its first other request; `hyper` serves every request with hyper's server
    /// and client. h2c ports and HTTP/2 clients are always hyper's.
    #[arg(long, env = "SVC_PROXY_HTTP1_ENGINE", value_enum, default_value_t = Http1Engine::Direct)]
    pub http1_engine: Http1Engine,

    /// How flows still open when `--drain-timeout` passes are ended: `reset` (RST, so that
    /// clients see a cut transfer as an error) or `fin` (an orderly close, which a client of a
    /// raw TCP stream cannot tell from a complete transfer).
    #[arg(long, env = "SVC_PROXY_DRAIN_DEADLINE_CLOSE", value_enum, default_value_t = DeadlineClose::Reset)]
    pub drain_deadline_close: DeadlineClose,
}

/// What serves HTTP/1.1 clients on `http` ports (see `--http1-engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Http1Engine {
    /// The proxy's own HTTP/1.1 forwarding, hyper for the rest.
    Direct,
    /// hyper's server and client for every request.
    Hyper,
}

/// How flows cut at the drain deadline are closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadlineClose {
    /// A reset (RST).
    Reset,
    /// An orderly close (FIN).
    Fin,
}

/// `0` means off.
pub fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn parse_header_limit(s: &str) -> Result<u64, String> {
    let n = crate::limits::parse_bytes(s)?;
    // hyper's smallest read buffer; HTTP/2 settings are 32-bit.
    if !(8192..=u64::from(u32::MAX)).contains(&n) {
        return Err(format!("{s:?} is out of range (8KiB to 4GiB)"));
    }
    Ok(n)
}

impl Args {
    /// Parses `--flag value` pairs as the command line would (for tests and embedding).
    ///
    /// # Errors
    /// A clap error for unknown or invalid flags.
    pub fn try_from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(
            std::iter::once("svc-proxy".into()).chain(flags.into_iter().map(Into::into)),
        )
    }
}

/// Parses `90`, `90s`, `500ms`, `5m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "invalid duration unit in {s:?} (use ms, s, m or h)"
        )),
    }
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid upstream {s:?}: expected IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let a =
            Args::try_from_flags(["--manifests", "x.yaml", "--admin-addr", "127.0.0.1:0"]).unwrap();
        assert_eq!(a.admin_addr.port(), 0);
        assert_eq!(a.dns_ttl, 5);
        assert!(a.dns_addr.is_none() && a.dns_forward.is_none() && !a.reset_removed);
        assert!(a.service_cidr.is_empty() && !a.metrics_endpoints);
        let a = Args::try_from_flags(["--dns-forward", "1.1.1.1"]).unwrap();
        assert_eq!(a.dns_forward, Some("1.1.1.1:53".parse().unwrap()));
        let a = Args::try_from_flags([
            "--service-cidr",
            "10.96.0.0/12,fd00:10:96::/112",
            "--service-cidr",
            "10.200.0.0/16",
        ])
        .unwrap();
        let cidrs: Vec<String> = a.service_cidr.iter().map(|c| c.to_string()).collect();
        assert_eq!(cidrs, ["10.96.0.0/12", "fd00:10:96::/112", "10.200.0.0/16"]);
        let err = Args::try_from_flags(["--service-cidr", "10.96.0.1/12"]).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.96.0.0/12"),
            "{err}"
        );
    }

    /// Envoy-like timeouts and limits by default.
    #[test]
    fn timeout_defaults() {
        let a = Args::try_from_flags(["--manifests", "x"]).unwrap();
        assert_eq!(a.upstream_response_timeout, Duration::from_secs(15));
        assert_eq!(a.header_read_timeout, Duration::from_secs(10));
        assert_eq!(a.max_request_headers, 60 * 1024);
        assert_eq!(a.upstream_idle_timeout, Duration::from_secs(90));
        assert_eq!(a.idle_timeout, Duration::from_secs(3600));
        assert_eq!(a.drain_deadline_close, DeadlineClose::Reset);
        assert_eq!(non_zero(Duration::ZERO), None);
        assert!(Args::try_from_flags(["--max-request-headers", "1KiB"]).is_err());
        let a = Args::try_from_flags(["--drain-deadline-close", "fin"]).unwrap();
        assert_eq!(a.drain_deadline_close, DeadlineClose::Fin);
    }
}
