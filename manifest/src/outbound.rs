//! Outbound host patterns: what a manifest's `outbound_hosts` and a bundle's
//! `grants.outbound_hosts` may say, and what each pattern lets a provider reach.
//!
//! A pattern is `[SCHEME://]HOST[:PORT]`:
//!
//! - `SCHEME` is `https` (the default) or `http`: plain HTTP is reached only when a pattern says
//!   `http://`.
//! - `HOST` is a name (`api.example.com`), subdomains of one (`*.example.com`), any name (`*`),
//!   an IP address (`10.1.2.3`, `[fd00::1]`) or a network (`10.0.0.0/8`, `[fd00::/8]`).
//! - `PORT` is a number or `*`; without one, the scheme's port (443 or 80).
//!
//! Names are checked against the host a request names; addresses are checked where the host
//! connects, after resolving the name: an address in a [restricted range](is_restricted) —
//! loopback, private, link-local (cloud metadata services among them), carrier-grade NAT,
//! multicast, documentation and other special-purpose ranges — is reached only when a pattern
//! names it as an address or network, whatever name led there.
//!
//! ```
//! use greentic_manifest::HostPattern;
//!
//! let p: HostPattern = "*.example.com".parse().unwrap();
//! assert!(p.admits_name(true, "api.example.com", 443));
//! assert!(!p.admits_name(false, "api.example.com", 80), "https only");
//! let local: HostPattern = "http://127.0.0.1:*".parse().unwrap();
//! assert!(local.admits_address(false, "127.0.0.1".parse().unwrap(), 8080));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What hosts a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`: any name or address (restricted addresses still need an address pattern).
    Any,
    /// `*.example.com`: names below `example.com`.
    Subdomains(String),
    /// `api.example.com`.
    Name(String),
    /// An address (`/32` or `/128`) or a network.
    Network {
        /// The network's address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
}

/// One outbound host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// `http://` (true) or `https://` (false, the default).
    pub plain_http: bool,
    /// The hosts.
    pub host: HostMatch,
    /// The port; `None` is any port (`:*`).
    pub port: Option<u16>,
    text: String,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

fn network(text: &str) -> Result<(IpAddr, u8), &'static str> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| "not an IP address or network")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or("the prefix length is not a number up to 32 (IPv4) or 128 (IPv6)")?,
    };
    Ok((addr, prefix))
}

impl FromStr for HostPattern {
    type Err = &'static str;

    fn from_str(pattern: &str) -> Result<HostPattern, &'static str> {
        let (plain_http, rest) = if let Some(rest) = pattern.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = pattern.strip_prefix("https://") {
            (false, rest)
        } else if pattern.contains("://") {
            return Err("the scheme must be `http://` or `https://`");
        } else {
            (false, pattern)
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (v6, after) = inner
                .split_once(']')
                .ok_or("an IPv6 address needs a closing `]`")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("only `:PORT` may follow `]`")?),
            };
            let (addr, prefix) = network(v6)?;
            if !addr.is_ipv6() {
                return Err("brackets hold IPv6 addresses");
            }
            (HostMatch::Network { addr, prefix }, port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if host.contains(':') {
                return Err("write an IPv6 address in brackets, e.g. `[fd00::1]:8080`");
            }
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let matched = if host == "*" {
                HostMatch::Any
            } else if let Some(domain) = host.strip_prefix("*.") {
                if !name_ok(domain) {
                    return Err("a wildcard may only be a leading `*.` before a domain name");
                }
                HostMatch::Subdomains(domain.to_string())
            } else if host.chars().next().is_some_and(|c| c.is_ascii_digit())
                && (host.contains('/') || host.parse::<Ipv4Addr>().is_ok())
            {
                let (addr, prefix) = network(&host)?;
                HostMatch::Network { addr, prefix }
            } else if host.contains('/') {
                return Err("give a host, not a URL with a path");
            } else if name_ok(&host) {
                HostMatch::Name(host)
            } else {
                return Err("labels are letters, digits and inner hyphens, separated by dots");
            };
            (matched, port)
        };
        let port = match port {
            None => Some(if plain_http { 80 } else { 443 }),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("the port is a number from 1 to 65535, or `*`")?,
            ),
        };
        Ok(HostPattern {
            plain_http,
            host,
            port,
            text: pattern.to_string(),
        })
    }
}

fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl HostPattern {
    fn scheme_and_port(&self, https: bool, port: u16) -> bool {
        self.plain_http != https && self.port.is_none_or(|p| p == port)
    }

    /// Whether a request naming `host` (a name or an IP literal) on `port` over HTTPS
    /// (`https`) or plain HTTP matches this pattern.
    pub fn admits_name(&self, https: bool, host: &str, port: u16) -> bool {
        if !self.scheme_and_port(https, port) {
            return false;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Name(name) => host == *name,
            HostMatch::Subdomains(domain) => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            HostMatch::Network { addr, prefix } => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| contains(*addr, *prefix, ip)),
        }
    }

    /// Whether this pattern names `ip` as an address or network (on `port`, with the scheme):
    /// what lets a connection reach a [restricted](is_restricted) address.
    pub fn admits_address(&self, https: bool, ip: IpAddr, port: u16) -> bool {
        match self.host {
            HostMatch::Network { addr, prefix } => {
                self.scheme_and_port(https, port) && contains(addr, prefix, ip)
            }
            _ => false,
        }
    }
}

/// Whether `ip` is in a range a provider may reach only through an address pattern: the
/// unspecified address, loopback, private (RFC 1918, IPv6 unique-local), link-local (where
/// cloud metadata services such as 169.254.169.254 answer), carrier-grade NAT, IETF protocol
/// assignments, documentation and benchmarking ranges, multicast, reserved and broadcast, and
/// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64) that are any of these.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast, reserved, broadcast
}

fn restricted_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return restricted_v4(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (deprecated) and NAT64 (64:ff9b::/96) embed an IPv4 address.
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return s[..6] == [0, 0, 0, 0, 0, 0] || restricted_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is a metadata service)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
        || (s[0] == 0x2002) // 6to4: routes to an embedded IPv4 address
        // The NAT64 local-use prefix (RFC 8215): a network's own translator, embedding an IPv4
        // address at a place only that network knows.
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn names_schemes_and_ports() {
        let plain = p("hooks.example.com");
        assert!(plain.admits_name(true, "hooks.example.com", 443));
        assert!(plain.admits_name(true, "HOOKS.example.com.", 443));
        assert!(
            !plain.admits_name(true, "hooks.example.com", 8443),
            "no port: 443 only"
        );
        assert!(
            !plain.admits_name(false, "hooks.example.com", 80),
            "no scheme: https only"
        );
        let http = p("http://127.0.0.1:8080");
        assert!(http.admits_name(false, "127.0.0.1", 8080));
        assert!(!http.admits_name(false, "127.0.0.1", 8081));
        assert!(!http.admits_name(true, "127.0.0.1", 8080));
        let sub = p("*.slack.com");
        assert!(sub.admits_name(true, "api.slack.com", 443));
        assert!(!sub.admits_name(true, "slack.com", 443));
        assert!(!sub.admits_name(true, "evilslack.com", 443));
        let any_port = p("https://api.example.com:*");
        assert!(any_port.admits_name(true, "api.example.com", 1));
        assert!(p("*").admits_name(true, "anything.example", 443));
        assert!(!p("*").admits_name(false, "anything.example", 80));
        assert!(p("http://*:*").admits_name(false, "x.example", 9));
    }

    #[test]
    fn addresses_and_networks() {
        let net = p("http://10.0.0.0/8:*");
        assert!(net.admits_name(false, "10.1.2.3", 80));
        assert!(net.admits_address(false, "10.1.2.3".parse().unwrap(), 80));
        assert!(!net.admits_address(false, "11.0.0.1".parse().unwrap(), 80));
        let v6 = p("[fd00::/8]:8443");
        assert!(v6.admits_address(true, "fd12::1".parse().unwrap(), 8443));
        assert!(v6.admits_name(true, "[fd12::1]", 8443));
        assert!(!v6.admits_address(true, "fe80::1".parse().unwrap(), 8443));
        // A v4 network also holds the v4-mapped spelling of its addresses.
        assert!(p("127.0.0.1").admits_address(true, "::ffff:127.0.0.1".parse().unwrap(), 443));
        // Name patterns never name an address.
        assert!(!p("*").admits_address(true, "127.0.0.1".parse().unwrap(), 443));
        assert!(!p("localhost").admits_address(true, "127.0.0.1".parse().unwrap(), 443));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("ftp://x.example", "scheme"),
            ("https://x.example/path", "URL with a path"),
            ("x.example:0", "port"),
            ("x.example:99999", "port"),
            ("*.*.example", "wildcard"),
            ("a*.example", "labels"),
            ("::1", "brackets"),
            ("[::1", "closing"),
            ("10.0.0.0/33", "prefix"),
            ("[127.0.0.1]", "IPv6"),
            ("", "labels"),
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn restricted_ranges() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.8.7",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            // NAT64 local-use (RFC 8215), the IPv4 address wherever the /48 to /96 prefix
            // puts it.
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(is_restricted(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip}");
        }
    }
}
