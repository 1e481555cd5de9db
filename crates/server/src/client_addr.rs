//! The client's address: the TCP peer's, unless the peer is a proxy the
//! operator trusts (`trusted_proxies`); then the address that proxy puts
//! in `X-Forwarded-For` (or `Forwarded`, RFC 7239).
//!
//! Why only from trusted peers: anyone can send the header. Read from an
//! untrusted peer, it would let every client pick its own address, dodge
//! the per-address limits and put any address in front of the backend.
//!
//! The chain is read from the right (the hop nearest to us) and the first
//! address that is not itself a trusted proxy is the client: a client
//! that sends its own `X-Forwarded-For` only adds entries on the left,
//! which a trusted proxy's appended entry hides. An entry that does not
//! parse stops the walk at the last trusted hop, which is then the address
//! (a proxy that garbles the header is not believed past itself).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The address a request is counted and reported under (an extension on
/// every request, set by the listener), and the TCP peer that delivered it
/// (the proxy in front, when there is one: what fleet diagnosis groups by).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// Who the client is.
    pub client: IpAddr,
    /// The TCP peer.
    pub peer: IpAddr,
}

/// Networks whose peers may say who the client is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated addresses or CIDRs (`127.0.0.1, 10.0.0.0/8`); `none`
    /// or nothing for none.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none"))
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is neither an address nor a CIDR like 10.0.0.0/8"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy (a TCP peer that is one carries many
    /// clients: its connections are not counted as one client's).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request that came from `peer`.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            warn_once_if_proxied(peer, headers);
            return peer;
        }
        let mut chain = forwarded_for(headers);
        let mut client = peer;
        while let Some(hop) = chain.pop() {
            match hop {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return canonical(ip),
                None => return client,
            }
        }
        client
    }
}

/// IPv4 peers of a dual-stack socket arrive as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hops a request names, oldest first (`None`: an entry that does not
/// parse): `X-Forwarded-For` if present, else the `for=` of `Forwarded`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff.iter().flat_map(|v| v.split(',')).map(|e| parse_hop(e.trim())).collect();
    }
    values("forwarded")
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| parse_hop(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| hop.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>())
        .ok()
}

/// A request that came through a proxy the operator did not list: every
/// client behind it shares the proxy's address (and its per-address
/// limits). Said once per process, as the fix is one setting.
fn warn_once_if_proxied(peer: IpAddr, headers: &HeaderMap) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if SAID.load(Ordering::Relaxed) {
        return;
    }
    let proxied = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    if proxied && !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "a request came through a proxy (it sent X-Forwarded-For or Forwarded) that is not in trusted_proxies: every client behind it counts as {peer} against the per-address limits, and backends see {peer}; if it is your proxy, set --trusted-proxies {peer}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let trusted: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let forged = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(trusted.client_of(ip("203.0.113.9"), &forged), ip("203.0.113.9"), "a forged header changes nothing");
        assert_eq!(trusted.client_of(ip("127.0.0.1"), &forged), ip("1.2.3.4"));
        assert_eq!(trusted.client_of(ip("::ffff:127.0.0.1"), &forged), ip("1.2.3.4"), "v4-mapped peers");
        assert_eq!(TrustedProxies::default().client_of(ip("127.0.0.1"), &forged), ip("127.0.0.1"), "none by default");
    }

    #[test]
    fn the_chain_is_read_from_the_nearest_hop() {
        let trusted: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        let peer = ip("127.0.0.1");
        // The client sent "6.6.6.6" itself; the edge proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-for", "10.1.2.3")]);
        assert_eq!(trusted.client_of(peer, &h), ip("198.51.100.7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(trusted.client_of(peer, &all_trusted), ip("10.0.0.5"));
        let garbled = headers(&[("x-forwarded-for", "198.51.100.7, garbage, 10.0.0.6")]);
        assert_eq!(trusted.client_of(peer, &garbled), ip("10.0.0.6"), "not believed past the garbled entry");
        let forwarded = headers(&[("forwarded", r#"for=198.51.100.7;proto=https, for="[2001:db8::17]:4711""#)]);
        assert_eq!(trusted.client_of(peer, &forwarded), ip("2001:db8::17"));
        let ported = headers(&[("x-forwarded-for", "198.51.100.7:5000")]);
        assert_eq!(trusted.client_of(peer, &ported), ip("198.51.100.7"));
        assert_eq!(trusted.client_of(peer, &HeaderMap::new()), peer, "no header: the peer itself");
    }

    #[test]
    fn lists_parse_or_name_the_bad_entry() {
        assert!("none".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert_eq!("::1, fd00::/8".parse::<TrustedProxies>().unwrap().0.len(), 2);
        let e = "10.0.0.0/8, proxy.local".parse::<TrustedProxies>().unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
    }
}
