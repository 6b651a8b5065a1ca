//! Who is calling: the client address that throttles, sessions and audit rows key on.
//!
//! The client is the TCP peer, which it cannot forge. Behind a reverse proxy listed in
//! `ACCOUNTS_TRUSTED_PROXIES`, it is the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy: entries further left were written by the client and prove nothing.

use std::{
    fmt,
    future::{Ready, ready},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use ipnet::IpNet;

/// The calling client's address, resolved through trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    ip: IpAddr,
}

impl ClientAddr {
    /// Resolves the client from the TCP peer and the `X-Forwarded-For` values, in header order.
    pub fn resolve<'a>(
        peer: Option<IpAddr>,
        forwarded_for: impl IntoIterator<Item = &'a str>,
        trusted_proxies: &[IpNet],
    ) -> Self {
        // No peer address (a test harness, a Unix socket): one shared, unspecified client.
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ip| ip.to_canonical());
        let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Self { ip: peer };
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        // Walk from the nearest hop outwards; the last address we could vouch for is the answer
        // when an entry is garbage or every entry is a proxy of ours.
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !trusted(&ip) {
                break;
            }
        }
        Self { ip: client }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The key throttles count under: an IPv4 address, or the /64 of an IPv6 address, because one
    /// IPv6 subscriber routinely holds a whole /64 and could otherwise rotate through it.
    pub fn throttle_key(&self) -> String {
        match self.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", Ipv6Addr::from(network))
            }
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip.fmt(f)
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl FromRequest for ClientAddr {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(req)))
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`ACCOUNTS_TRUSTED_PROXIES`), as app data.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl ClientAddr {
    /// The client of `req`, using the trusted proxies from the app's settings.
    pub fn of(req: &HttpRequest) -> Self {
        let trusted = req
            .app_data::<web::Data<TrustedProxies>>()
            .map(|trusted| trusted.0.as_slice())
            .unwrap_or_default();
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        Self::resolve(req.peer_addr().map(|a| a.ip()), forwarded, trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let client = ClientAddr::resolve(ip("203.0.113.7"), ["198.51.100.1"], &[]);
        assert_eq!(client.throttle_key(), "203.0.113.7");
        let proxies = nets(&["10.0.0.0/8"]);
        let client = ClientAddr::resolve(ip("203.0.113.7"), ["198.51.100.1"], &proxies);
        assert_eq!(client.throttle_key(), "203.0.113.7");
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_wins() {
        let proxies = nets(&["10.0.0.0/8", "192.0.2.1/32"]);
        // The client forged "1.1.1.1"; the proxies appended the real address and then themselves.
        let client = ClientAddr::resolve(
            ip("10.0.0.5"),
            ["1.1.1.1, 198.51.100.9", "192.0.2.1"],
            &proxies,
        );
        assert_eq!(client.ip(), "198.51.100.9".parse::<IpAddr>().unwrap());
        // Every hop is ours: the left-most one is as far as we can see.
        let client = ClientAddr::resolve(ip("10.0.0.5"), ["10.1.1.1"], &proxies);
        assert_eq!(client.throttle_key(), "10.1.1.1");
        // No header: the proxy itself.
        let client = ClientAddr::resolve(ip("10.0.0.5"), [], &proxies);
        assert_eq!(client.throttle_key(), "10.0.0.5");
        // Garbage stops the walk at the last hop we trust.
        let client = ClientAddr::resolve(ip("10.0.0.5"), ["bogus, 10.2.2.2"], &proxies);
        assert_eq!(client.throttle_key(), "10.2.2.2");
        // Ports and brackets are tolerated.
        let client = ClientAddr::resolve(ip("10.0.0.5"), ["[2001:db8::1]:443"], &proxies);
        assert_eq!(client.throttle_key(), "2001:db8::/64");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a = ClientAddr::resolve(ip("2001:db8:1:2:aaaa::1"), [], &[]);
        let b = ClientAddr::resolve(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), [], &[]);
        let c = ClientAddr::resolve(ip("2001:db8:1:3::1"), [], &[]);
        assert_eq!(a.throttle_key(), "2001:db8:1:2::/64");
        assert_eq!(a.throttle_key(), b.throttle_key());
        assert_ne!(a.throttle_key(), c.throttle_key());
        // An IPv4 client on a dual-stack socket is still an IPv4 client.
        let mapped = ClientAddr::resolve(ip("::ffff:198.51.100.4"), [], &[]);
        assert_eq!(mapped.throttle_key(), "198.51.100.4");
    }
}
