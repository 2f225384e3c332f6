//! The operator's exceptions to "public addresses only": `--callback-allow` and
//! `--callback-deny-hosts`, and the check of a callback URL against them.
//!
//! Must never: resolve names (the coordinator checks resolved addresses with
//! [`Policy::check_ip`] when it connects).

use super::{Class, UrlError, classify, parse};
use std::net::IpAddr;
use url::{Host, Url};

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
}
