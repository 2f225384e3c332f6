//! Bearer-token auth: `authorization: Bearer <token>` metadata checked against the tokens
//! of each role, in constant time. With no token configured at all every service is open
//! (local development; the coordinator logs a warning); otherwise every call needs a token.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Which tokens a service accepts.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// No token required (no token configured anywhere).
    open: bool,
    /// Tokens that grant this service.
    allowed: Vec<String>,
    /// Every token known to the coordinator (to tell "wrong role" from "unknown token").
    known: Vec<String>,
}

impl Guard {
    /// A guard that lets `allowed` through (nobody if empty); `known` are all configured
    /// tokens.
    pub fn new(allowed: Vec<String>, known: Vec<String>) -> Self {
        Guard {
            open: false,
            allowed,
            known,
        }
    }

    /// A guard that requires no token.
    pub fn open() -> Self {
        Guard {
            open: true,
            ..Guard::default()
        }
    }

    /// True when no token is required.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The tonic interceptor: UNAUTHENTICATED without a known token, PERMISSION_DENIED for
    /// a token of another role.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.is_open() {
            return Ok(req);
        }
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        if contains(&self.allowed, token) {
            Ok(req)
        } else if contains(&self.known, token) {
            Err(Status::permission_denied(
                "this token's role may not call this service",
            ))
        } else {
            Err(Status::unauthenticated("unknown token"))
        }
    }
}

fn contains(tokens: &[String], candidate: &str) -> bool {
    // Compare against every token so the time taken does not say which one matched.
    tokens.iter().fold(false, |found, t| {
        found | bool::from(t.as_bytes().ct_eq(candidate.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("ascii"),
            );
        }
        r
    }

    #[test]
    fn roles() {
        let g = Guard::new(vec!["a".into()], vec!["a".into(), "b".into()]);
        assert!(g.check(req(Some("a"))).is_ok());
        assert_eq!(
            g.check(req(Some("b"))).err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            g.check(req(Some("c"))).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            g.check(req(None)).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        assert!(Guard::open().check(req(None)).is_ok());
        // A role without tokens is closed once tokens exist.
        let closed = Guard::new(vec![], vec!["a".into()]);
        assert_eq!(
            closed.check(req(Some("a"))).err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            closed.check(req(None)).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }
}
