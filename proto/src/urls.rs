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

mod class;
mod policy;

pub use class::{Class, classify};
pub use policy::{BadAllowEntry, Policy};

use std::net::IpAddr;
use url::Url;

/// Longest callback URL, in bytes (one of [`crate::limits`]).
pub use crate::limits::MAX_URL;

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

#[cfg(test)]
mod tests {
    use super::*;

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
