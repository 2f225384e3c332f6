//! Which IP addresses are internal: loopback, private, link-local, metadata and the other
//! ranges a callback must not reach unless the operator allows them.
//!
//! Must never: look at host text — only parsed addresses are classified.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an IP address is not a public one. Callbacks to these are refused unless the
/// operator's allow list names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0, :: (Linux connects them to the local host).
    Unspecified,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fec0::/10 (site-local).
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (also Alibaba Cloud's metadata service).
    Shared,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// 169.254.169.254 and fd00:ec2::254: the cloud instance metadata service.
    Metadata,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation, benchmarking, protocol-assignment and future-use ranges, 0.0.0.0/8,
    /// deprecated IPv4-compatible IPv6: nothing a callback has any business reaching.
    Reserved,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Loopback => "a loopback address",
            Class::Unspecified => "the unspecified address (the local host)",
            Class::Private => "a private address",
            Class::Shared => "a shared (carrier-grade NAT) address",
            Class::LinkLocal => "a link-local address",
            Class::UniqueLocal => "a unique-local address",
            Class::Metadata => "the cloud metadata address",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Reserved => "a reserved address",
        })
    }
}

/// Why `ip` is not a public address, or `None` when it is one. IPv4 addresses embedded in
/// IPv6 ones (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`)
/// are classified as the IPv4 address they reach.
pub fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => Class::Metadata,
        _ if ip.is_unspecified() => Class::Unspecified,
        _ if ip.is_broadcast() => Class::Broadcast,
        (127, ..) => Class::Loopback,
        (10, ..) | (192, 168, _) => Class::Private,
        (172, b, _) if (16..32).contains(&b) => Class::Private,
        (100, b, _) if (64..128).contains(&b) => Class::Shared,
        (169, 254, _) => Class::LinkLocal,
        (224..=239, ..) => Class::Multicast,
        // 0/8 "this network", 192.0.0/24 protocol assignments, 192.0.2/24, 198.51.100/24
        // and 203.0.113/24 documentation, 198.18/15 benchmarking, 240/4 future use.
        (0, ..) | (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (240..=255, ..) => {
            Class::Reserved
        }
        (198, 18 | 19, _) => Class::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    Some(match s {
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => Class::Metadata,
        _ if ip.is_unspecified() => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        // Deprecated IPv4-compatible ::a.b.c.d: the embedded address decides, and a public
        // one is still no address a callback needs.
        [0, 0, 0, 0, 0, 0, hi, lo] => classify_v4(embedded(hi, lo)).unwrap_or(Class::Reserved),
        // NAT64 reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return classify_v4(embedded(hi, lo)),
        // 6to4 reaches the IPv4 address in bits 16-48.
        [0x2002, hi, lo, ..] => return classify_v4(embedded(hi, lo)),
        [x, ..] if x & 0xff00 == 0xff00 => Class::Multicast,
        [x, ..] if x & 0xffc0 == 0xfe80 => Class::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => Class::Private,
        [x, ..] if x & 0xfe00 == 0xfc00 => Class::UniqueLocal,
        // 2001:db8::/32 documentation, 100::/64 discard.
        [0x2001, 0xdb8, ..] | [0x100, 0, 0, 0, ..] => Class::Reserved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Class> {
        classify(ip.parse().expect("test address"))
    }

    #[test]
    fn classifies_internal_addresses() {
        use Class::*;
        for (ip, want) in [
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("fec0::1", Private),
            ("100.64.0.1", Shared),
            ("100.100.100.200", Shared),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("169.254.169.254", Metadata),
            ("fd00:ec2::254", Metadata),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("0.1.2.3", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("2001:db8::1", Reserved),
            // IPv4 inside IPv6 is judged as the IPv4 address it reaches.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:10.0.0.1", Private),
            ("::127.0.0.1", Loopback),
            ("::8.8.8.8", Reserved),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:a9fe:a9fe::1", Metadata),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.253.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }
}
