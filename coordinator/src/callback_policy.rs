//! Which addresses job callbacks may reach: the check of a callback URL at enqueue and the
//! guarded HTTP client that delivers callbacks.
//!
//! The rules are [`lanes_proto::urls::Policy`]'s (public addresses only, plus the operator's
//! `--callback-allow`, minus `--callback-deny-hosts`). At enqueue a URL that does not parse
//! or names an internal IP address is refused; a host *name* can only be judged by what it
//! resolves to, so the delivery client resolves names itself ([`GuardedResolver`]) and
//! drops internal addresses at connect time — no spelling, and no DNS answer that changes
//! between enqueue and delivery (rebinding), reaches an address the policy refuses.
//!
//! Must never: follow redirects (a `Location` with a literal IP would never pass through
//! the resolver), use a proxy (the proxy would resolve the name, not us), or guard the
//! operator's own global event endpoints (`LANES_EVENT_ENDPOINTS` are trusted: they are
//! configuration, not input, and are often in-cluster).

use crate::error::Error;
use lanes_proto::urls::{Class, Policy, UrlError};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Checks an optional callback URL at enqueue: empty means none. A refusal is an
/// `INVALID_ARGUMENT` naming `field`.
pub fn check_at_enqueue(policy: &Policy, field: &str, raw: &str) -> Result<Option<String>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    match policy.check(field, raw) {
        // Stored as given: the dispatcher parses it with the same parser again.
        Ok(_) => Ok(Some(raw.to_owned())),
        Err(e) => Err(Error::InvalidField {
            field: e.field().to_owned(),
            message: e.to_string(),
        }),
    }
}

/// A name whose every address the policy refuses: the delivery fails for good.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves to {addr}, {class}; this coordinator only calls public addresses unless \
     --callback-allow lists it"
)]
pub struct Refused {
    /// The name in the callback URL.
    pub host: String,
    /// The first refused address it resolved to.
    pub addr: IpAddr,
    /// Why that address is refused.
    pub class: Class,
}

/// Resolves names with the system resolver, then keeps only the addresses the policy
/// allows (all of them for a name on the allow list).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.allows_name(&host) {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(class) => {
                        refused.get_or_insert((a.ip(), class));
                        false
                    }
                })
                .collect();
            match refused {
                Some((addr, class)) if allowed.is_empty() => {
                    Err(Box::new(Refused { host, addr, class }) as _)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The HTTP client of job callbacks: names resolved through [`GuardedResolver`], no
/// redirects, no proxy.
pub fn guarded_client(
    policy: Arc<Policy>,
    timeout: Duration,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        // A redirect is an answer like any other non-2xx (retried): following it could
        // reach an address the policy refuses, and a literal IP never meets the resolver.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .user_agent(user_agent)
        .build()
}

/// Why a delivery to `url` is refused before any connection: it does not parse, is not
/// http(s), names a denied host or an internal IP address. `None`: go ahead (names are
/// checked when connecting).
pub fn refusal(policy: &Policy, url: &str) -> Option<UrlError> {
    policy.check("callback URL", url).err()
}

/// The policy refusal somewhere in a failed request's chain of causes, if that is why it
/// failed.
pub fn refused_in(err: &reqwest::Error) -> Option<&Refused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cause = e.source();
    }
    None
}
