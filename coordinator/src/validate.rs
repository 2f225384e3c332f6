//! Input checks, run before anything touches the database so bad input changes nothing. The
//! limits themselves are `lanes_proto::limits`, shared with the gateway; callback URLs are
//! checked here.

use crate::error::{Error, Result};
use lanes_proto::limits;
pub use lanes_proto::limits::{MAX_BATCH, MAX_ERROR, MAX_PROGRESS_MESSAGE, MAX_URL, tail};

/// Checks a queue name: 1-128 bytes of `[A-Za-z0-9_.:-]`.
pub fn queue_name(name: &str) -> Result<()> {
    Ok(limits::queue_name("queue", name)?)
}

/// Checks an optional key (lane, idempotency): empty means absent, else 1-256 bytes.
pub fn optional_key(what: &str, key: &str) -> Result<Option<String>> {
    Ok(limits::key(what, key)?.map(str::to_owned))
}

/// Checks JSON text within `limit` bytes (kept as it is). Empty text is JSON `null` only
/// where `empty_ok`; the text to store is returned.
pub fn json(what: &str, text: &str, limit: usize, empty_ok: bool) -> Result<String> {
    limits::json(what, text, limit, empty_ok)?;
    Ok(if text.trim().is_empty() {
        "null".to_owned()
    } else {
        text.to_owned()
    })
}

/// Checks an agent id and its queue list.
pub fn agent(agent_id: &str, queues: &[String]) -> Result<()> {
    Ok(limits::agent(agent_id, queues)?)
}

/// Checks an optional callback URL: http(s) only.
pub fn optional_url(what: &str, url: &str) -> Result<Option<String>> {
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > MAX_URL {
        return Err(Error::Invalid(format!(
            "{what} is longer than {MAX_URL} bytes"
        )));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| Error::Invalid(format!("{what} must be an http:// or https:// URL")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::Invalid(format!("{what} has no host")));
    }
    Ok(Some(url.to_owned()))
}

/// Checks an optional callback URL (see [`optional_url`]) and refuses hosts of the
/// deny-list (`--callback-deny-hosts`): an entry matches the host itself and its subdomains.
pub fn callback_url(what: &str, url: &str, deny: &[String]) -> Result<Option<String>> {
    let url = optional_url(what, url)?;
    if let Some(u) = &url {
        let host = host_of(u);
        let denied = deny.iter().any(|d| {
            !d.is_empty()
                && (host == *d
                    || host
                        .strip_suffix(d.as_str())
                        .is_some_and(|p| p.ends_with('.')))
        });
        if denied {
            return Err(Error::Invalid(format!(
                "{what} points to host {host}, which this coordinator does not call back"
            )));
        }
    }
    Ok(url)
}

/// The lower-case host of an http(s) URL (no user info, port or brackets).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(optional_url("callback_url", "https://n8n.example/webhook/x").is_ok());
        assert!(optional_url("callback_url", "ftp://x").is_err());
        assert!(optional_url("callback_url", "http://").is_err());
        assert_eq!(optional_url("callback_url", "").ok(), Some(None));
        let deny = vec!["metadata.google.internal".to_owned(), "10.0.0.1".to_owned()];
        let ok = |u: &str| callback_url("callback_url", u, &deny).is_ok();
        assert!(ok("https://n8n.example/webhook/x"));
        assert!(!ok("http://10.0.0.1:8080/x"));
        assert!(!ok("http://user:pw@Metadata.Google.Internal/x"));
        assert!(!ok("http://a.metadata.google.internal?x"));
        assert!(ok("http://notmetadata.google.internal/"));
        assert!(ok("http://[::1]:80/"));
    }
}
