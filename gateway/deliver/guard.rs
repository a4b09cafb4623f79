//! The SSRF guard: which addresses deliveries may reach.
//!
//! Owns: the classification of IP addresses into public and forbidden ranges.
//! Must not touch: the network. It is pure; `deliver` applies it to literal hosts and, through
//! its resolver, to every address DNS returns, so a hostname cannot smuggle a private address in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be delivered to by default, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_unspecified() => "an unspecified address",
        (0, _) => "in 0.0.0.0/8 (this network)",
        (127, _) => "a loopback address",
        (10, _) => "a private address",
        (172, 16..=31) => "a private address",
        (192, 168) => "a private address",
        (169, 254) => "a link-local address (cloud metadata lives here)",
        (100, 64..=127) => "a CGNAT (shared) address",
        (192, 0) if c == 0 => "an IETF protocol address",
        (198, 18..=19) => "a benchmarking address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
    // forms reach the embedded IPv4 address, so they are judged by it.
    let s = ip.segments();
    let embedded = match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            Some(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
        }
        _ => None,
    };
    if let Some(v4) = embedded {
        // The deprecated IPv4-compatible form (::a.b.c.d) has no legitimate use any more.
        let compatible = s[0] == 0 && s[5] == 0;
        return v4_reason(v4).or(compatible.then_some("an IPv4-compatible address"));
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some("a unique-local (private) address"),
        x if x & 0xffc0 == 0xfe80 => Some("a link-local address"),
        x if x & 0xffc0 == 0xfec0 => Some("a site-local address"),
        x if x & 0xff00 == 0xff00 => Some("a multicast address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(forbidden_reason(ip.parse().unwrap()).is_some(), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in
            ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert_eq!(forbidden_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
