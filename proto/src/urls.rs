//! Outbound URLs (job callbacks): the one parser the coordinator and the gateway share, and
//! the address policy that keeps callbacks off internal addresses.
//!
//! Owns: what a callback URL may look like (`url::Url`, the WHATWG parser reqwest uses too,
//! so `2130706433`, `127.1`, `0x7f000001` and `0177.0.0.1` are read as the 127.0.0.1 they
//! reach), which IP addresses are internal ([`classify`]), and the operator's exceptions
//! ([`Policy`]: `--callback-allow`, `--callback-deny-hosts`).
//!
//! Must never: resolve names or open connections (the coordinator applies [`Policy`] to the
//! addresses it resolves, at connect time, so DNS answers cannot slip past it), nor compare
//! host *text* to decide about an address — only parsed [`IpAddr`]s are classified.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Longest callback URL, in bytes.
pub const MAX_URL: usize = 2048;

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

/// What is wrong with a callback URL. Every message names the field and says what is
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Over [`MAX_URL`] bytes.
    #[error("{field} is {len} bytes; the limit is {MAX_URL}")]
    TooLong {
        /// The field at fault.
        field: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Whitespace or control characters, which the parser would silently drop or trim.
    #[error("{field} contains whitespace or control characters; send the URL without them")]
    Whitespace {
        /// The field at fault.
        field: String,
    },
    /// Not a URL at all.
    #[error(
        "{field} is not a valid URL ({reason}); send an absolute http:// or https:// URL such \
         as https://n8n.example/webhook/lanes-job-done"
    )]
    Unparseable {
        /// The field at fault.
        field: String,
        /// The parser's explanation.
        reason: url::ParseError,
    },
    /// A scheme other than http or https.
    #[error("{field} must be an http:// or https:// URL (got {scheme}:)")]
    Scheme {
        /// The field at fault.
        field: String,
        /// The scheme given.
        scheme: String,
    },
    /// The host is on the operator's deny list.
    #[error(
        "{field} points to host {host}, which this coordinator does not call back (--callback-deny-hosts)"
    )]
    DeniedHost {
        /// The field at fault.
        field: String,
        /// The host, lower case.
        host: String,
    },
    /// The URL names an internal IP address the allow list does not name.
    #[error(
        "{field} points to {addr}, {class}; this coordinator only calls public addresses \
         unless --callback-allow lists it"
    )]
    Internal {
        /// The field at fault.
        field: String,
        /// The address, as parsed (`127.1` shows as 127.0.0.1).
        addr: IpAddr,
        /// Why it is not public.
        class: Class,
    },
}

impl UrlError {
    /// The field at fault.
    pub fn field(&self) -> &str {
        match self {
            UrlError::TooLong { field, .. }
            | UrlError::Whitespace { field }
            | UrlError::Unparseable { field, .. }
            | UrlError::Scheme { field, .. }
            | UrlError::DeniedHost { field, .. }
            | UrlError::Internal { field, .. } => field,
        }
    }
}

/// A bad entry of `--callback-allow` (refused at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--callback-allow entry {entry:?} is not a host name, an IP address or a CIDR block \
     such as 10.0.0.0/8 ({reason})"
)]
pub struct BadAllowEntry {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a callback URL: at most [`MAX_URL`] bytes, no whitespace, absolute http(s) with a
/// host (the WHATWG parser refuses `http://:80/` and `http://[::1/`). No address policy:
/// the gateway uses this alone and leaves the policy to the coordinator.
pub fn parse(field: &str, raw: &str) -> Result<Url, UrlError> {
    let field = field.to_owned();
    if raw.len() > MAX_URL {
        return Err(UrlError::TooLong {
            field,
            len: raw.len(),
        });
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Whitespace { field });
    }
    let url = Url::parse(raw).map_err(|reason| UrlError::Unparseable {
        field: field.clone(),
        reason,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        let scheme = url.scheme().to_owned();
        return Err(UrlError::Scheme { field, scheme });
    }
    // http(s) URLs always have a host once parsed (an empty one is a parse error); checked
    // anyway so a parser change cannot let a host-less URL through.
    if url.host().is_none() {
        return Err(UrlError::Unparseable {
            field,
            reason: url::ParseError::EmptyHost,
        });
    }
    Ok(url)
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

/// An allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A host name: the name and its subdomains; whatever they resolve to is trusted.
    Name(String),
    /// An address block (a single address is a /32 or /128).
    Net(IpAddr, u8),
}

/// The operator's exceptions to "public addresses only": `--callback-allow` (host names,
/// addresses and CIDR blocks that may be called although internal, e.g. an in-cluster n8n)
/// and `--callback-deny-hosts` (host names refused even when public; they win over the
/// allow list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Rule>,
    deny_hosts: Vec<String>,
}

impl Policy {
    /// Builds the policy from the two comma-separated lists (entries trimmed, empty ones
    /// dropped, names lower-cased). An entry with a `/` must be a valid CIDR block.
    pub fn new(allow: &[String], deny_hosts: &[String]) -> Result<Policy, BadAllowEntry> {
        let allow = allow
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(rule)
            .collect::<Result<_, _>>()?;
        let deny_hosts = deny_hosts
            .iter()
            .map(|h| clean_name(h))
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Policy { allow, deny_hosts })
    }

    /// Whether the allow list names host `name` (or a domain above it): its addresses are
    /// then trusted whatever they are.
    pub fn allows_name(&self, name: &str) -> bool {
        let name = clean_name(name);
        self.allow.iter().any(|r| match r {
            Rule::Name(n) => is_within(&name, n),
            Rule::Net(..) => false,
        })
    }

    /// `Ok` when a callback may connect to `ip`: a public address, or one the allow list
    /// names; else why not. IPv4-mapped IPv6 addresses match IPv4 entries.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Class> {
        let ip = ip.to_canonical();
        let allowed = self.allow.iter().any(|r| match r {
            Rule::Net(net, prefix) => in_net(ip, *net, *prefix),
            Rule::Name(_) => false,
        });
        match classify(ip) {
            Some(class) if !allowed => Err(class),
            _ => Ok(()),
        }
    }

    /// Parses `raw` (see [`parse`]) and applies what can be decided without resolving a
    /// name: a denied host, or an IP address that [`Policy::check_ip`] refuses. Names are
    /// checked when the coordinator connects.
    pub fn check(&self, field: &str, raw: &str) -> Result<Url, UrlError> {
        let url = parse(field, raw)?;
        let addr = match url.host() {
            Some(Host::Ipv4(a)) => IpAddr::V4(a),
            Some(Host::Ipv6(a)) => IpAddr::V6(a),
            Some(Host::Domain(d)) => {
                let host = clean_name(d);
                if self
                    .deny_hosts
                    .iter()
                    .any(|denied| is_within(&host, denied))
                {
                    return Err(UrlError::DeniedHost {
                        field: field.to_owned(),
                        host,
                    });
                }
                return Ok(url);
            }
            None => return Ok(url),
        };
        let denied_text = self.deny_hosts.iter().any(|d| {
            d.parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == addr.to_canonical())
        });
        if denied_text {
            return Err(UrlError::DeniedHost {
                field: field.to_owned(),
                host: addr.to_string(),
            });
        }
        self.check_ip(addr).map_err(|class| UrlError::Internal {
            field: field.to_owned(),
            addr,
            class,
        })?;
        Ok(url)
    }
}

/// Lower case, without a trailing dot or IPv6 brackets.
fn clean_name(name: &str) -> String {
    let n = name.trim().trim_end_matches('.');
    let n = n
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(n);
    n.to_ascii_lowercase()
}

/// `host` is `domain` or one of its subdomains.
fn is_within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn rule(entry: &str) -> Result<Rule, BadAllowEntry> {
    let bad = |reason: &str| BadAllowEntry {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let ip = clean_name(addr).parse::<IpAddr>().ok();
    match (ip, prefix) {
        (None, None) => {
            let name = clean_name(entry);
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/' || c == ':')
            {
                return Err(bad("not a host name"));
            }
            Ok(Rule::Name(name))
        }
        (None, Some(_)) => Err(bad("the part before / is not an IP address")),
        (Some(ip), None) => {
            let ip = ip.to_canonical();
            Ok(Rule::Net(ip, max_prefix(ip)))
        }
        (Some(ip), Some(p)) => {
            let ip = ip.to_canonical();
            let p: u8 = p
                .parse()
                .map_err(|_| bad("the prefix length is not a number"))?;
            if p > max_prefix(ip) {
                return Err(bad(&format!(
                    "the prefix length is {p}; the limit is {}",
                    max_prefix(ip)
                )));
            }
            Ok(Rule::Net(ip, p))
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `ip` lies in `net`/`prefix` (both canonical: an IPv4 block never holds an IPv6 address).
fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
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

    #[test]
    fn every_spelling_of_loopback_and_metadata_is_refused() {
        let p = Policy::default();
        for (url, addr) in [
            ("http://2130706433:8080/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            // WHATWG: a backslash ends the authority of an http URL, so the host is
            // 127.0.0.1, whatever follows.
            ("http://127.0.0.1:8080\\@example.com/", "127.0.0.1"),
            ("http://0.0.0.0/", "0.0.0.0"),
            ("http://[::]/", "::"),
            ("http://[::1]:80/", "::1"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
            ),
            ("http://2852039166/", "169.254.169.254"),
            ("http://0xa9fea9fe/", "169.254.169.254"),
            ("http://0251.0376.0251.0376/", "169.254.169.254"),
            ("http://169.254.43518/", "169.254.169.254"),
            ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
            ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
            ("http://user:pw@10.0.0.1/", "10.0.0.1"),
            ("http://n8n.example@127.0.0.1/", "127.0.0.1"),
        ] {
            match p.check("callback_url", url) {
                Err(UrlError::Internal { addr: a, field, .. }) => {
                    assert_eq!(a.to_string(), addr, "{url}");
                    assert_eq!(field, "callback_url");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn unparseable_and_non_http_urls_are_refused() {
        let p = Policy::default();
        for url in [
            "http://:80/",
            "http://[::1/",
            "http://",
            "not a url",
            "//n8n.example/x",
            "http://exa mple.com/",
            "http://example.com/\n",
            "http://1.2.3.4.5/",
        ] {
            let e = p.check("callback_url", url).expect_err(url);
            assert!(
                matches!(
                    e,
                    UrlError::Unparseable { .. } | UrlError::Whitespace { .. }
                ),
                "{url}: {e:?}"
            );
        }
        for url in ["ftp://x/", "javascript:alert(1)", "file:///etc/passwd"] {
            let e = p.check("failure_callback_url", url).expect_err(url);
            assert!(matches!(e, UrlError::Scheme { .. }), "{url}: {e:?}");
            assert_eq!(e.field(), "failure_callback_url");
        }
        let long = format!("https://n8n.example/{}", "x".repeat(MAX_URL));
        assert!(matches!(
            p.check("callback_url", &long),
            Err(UrlError::TooLong { .. })
        ));
    }

    #[test]
    fn names_and_public_addresses_pass_the_static_check() {
        let p = Policy::default();
        for url in [
            "https://n8n.example/webhook/x",
            "http://localhost:5678/",
            "http://8.8.8.8/",
            "https://user:pw@n8n.example:8443/a?b=c",
        ] {
            assert!(p.check("callback_url", url).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_allow_list_admits_addresses_blocks_and_names() {
        let allow: Vec<String> = ["127.0.0.1", "10.0.0.0/8", "n8n.svc.cluster.local", "[::1]"]
            .map(String::from)
            .to_vec();
        let p = Policy::new(&allow, &[]).expect("valid");
        let ok = |u: &str| p.check("callback_url", u).is_ok();
        assert!(ok("http://127.0.0.1:5678/"));
        assert!(ok("http://2130706433:5678/"));
        assert!(ok("http://[::ffff:127.0.0.1]/"));
        assert!(ok("http://10.200.0.5/"));
        assert!(ok("http://[::1]/"));
        assert!(!ok("http://127.0.0.2/"));
        assert!(!ok("http://169.254.169.254/"));
        assert!(ok("http://11.0.0.1/"));
        assert!(p.allows_name("n8n.svc.cluster.local"));
        assert!(p.allows_name("a.n8n.svc.cluster.local."));
        assert!(!p.allows_name("evil-n8n.svc.cluster.local"));
        let all = Policy::new(&["0.0.0.0/0".into(), "::/0".into()], &[]).expect("valid");
        assert!(all.check_ip("169.254.169.254".parse().expect("ip")).is_ok());
        assert!(all.check_ip("fd00:ec2::254".parse().expect("ip")).is_ok());
    }

    #[test]
    fn bad_allow_entries_are_refused() {
        for e in ["10.0.0.0/33", "::/129", "x.y/8", "10.0.0.0/a", "a b"] {
            assert!(Policy::new(&[e.to_owned()], &[]).is_err(), "{e}");
        }
        assert!(Policy::new(&[" ".into(), "".into()], &[]).is_ok());
    }

    #[test]
    fn denied_hosts_win() {
        let p = Policy::new(
            &["10.1.2.3".into(), "metadata.internal".into()],
            &["metadata.internal".into(), "10.1.2.3".into()],
        )
        .expect("valid");
        let denied =
            |u: &str| matches!(p.check("callback_url", u), Err(UrlError::DeniedHost { .. }));
        assert!(denied("http://Metadata.Internal./x"));
        assert!(denied("http://a.metadata.internal/x"));
        assert!(denied("https://10.1.2.3:8443/hook"));
        assert!(denied("https://167838211/hook"));
        assert!(!denied("http://notmetadata.internal/"));
    }

    #[test]
    fn messages_name_the_field_and_the_way_out() {
        let e = Policy::default()
            .check("callback_url", "http://127.1:9/x")
            .expect_err("loopback");
        assert_eq!(
            e.to_string(),
            "callback_url points to 127.0.0.1, a loopback address; this coordinator only calls \
             public addresses unless --callback-allow lists it"
        );
    }
}
