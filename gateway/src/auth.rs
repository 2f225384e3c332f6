//! `X-API-Key` auth with three roles. A handler states the role it needs by taking an
//! extractor ([`CanEnqueue`], [`CanRead`], [`CanAdmin`]); the key is compared in constant
//! time against every configured key. `admin` may do everything; `enqueue` and `read` are
//! separate (list one key under both roles to give it both).
//!
//! Must never: tell from its timing which key matched, or let a request through when keys
//! are configured and the key is missing (401) or lacks the role (403).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::marker::PhantomData;
use subtle::ConstantTimeEq;

/// The header carrying the key.
pub const HEADER: &str = "x-api-key";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// POST /api/jobs, /api/jobs/batch, /api/wake-worker, cancel and retry.
    Enqueue,
    /// Every GET of /api.
    Read,
    /// Everything, including /admin/api.
    Admin,
}

impl Role {
    /// The role named `name` (`enqueue`, `read`, `admin`).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "enqueue" => Some(Role::Enqueue),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Enqueue => "enqueue",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// The configured keys and their roles.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    entries: Vec<(Vec<u8>, Role)>,
}

impl Keys {
    /// Adds `key` with `role`.
    pub fn add(&mut self, role: Role, key: &str) {
        self.entries.push((key.as_bytes().to_vec(), role));
    }

    /// True when no key is configured: every route is open.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The roles of `key`, or `None` for an unknown key. Compares against every entry so
    /// the time taken does not depend on which one matched.
    pub fn roles_of(&self, key: &str) -> Option<Vec<Role>> {
        const ALL: [Role; 3] = [Role::Enqueue, Role::Read, Role::Admin];
        let mut has = [subtle::Choice::from(0); 3];
        for (k, role) in &self.entries {
            has[*role as usize] |= k.as_slice().ct_eq(key.as_bytes());
        }
        let roles: Vec<Role> = ALL
            .into_iter()
            .zip(has)
            .filter_map(|(r, c)| bool::from(c).then_some(r))
            .collect();
        (!roles.is_empty()).then_some(roles)
    }

    /// Checks the request's key for `need`: 401 without a known key, 403 without the role.
    pub fn check(&self, parts: &Parts, need: Role) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let key = parts
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing X-API-Key header"))?;
        let roles = self
            .roles_of(key)
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        if roles.contains(&Role::Admin) || roles.contains(&need) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key lacks the `{}` role (or `admin`)",
                need.name()
            )))
        }
    }
}

/// A role a handler needs, as a type.
pub trait Need {
    /// The role.
    const ROLE: Role;
}

/// Marker: the `enqueue` role.
pub struct EnqueueRole;
/// Marker: the `read` role.
pub struct ReadRole;
/// Marker: the `admin` role.
pub struct AdminRole;

impl Need for EnqueueRole {
    const ROLE: Role = Role::Enqueue;
}
impl Need for ReadRole {
    const ROLE: Role = Role::Read;
}
impl Need for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// Extractor that admits the request only when its key holds role `N` (or `admin`).
pub struct Allowed<N>(PhantomData<N>);

/// The caller may enqueue, wake, cancel and retry.
pub type CanEnqueue = Allowed<EnqueueRole>;
/// The caller may read jobs and stats.
pub type CanRead = Allowed<ReadRole>;
/// The caller is an operator.
pub type CanAdmin = Allowed<AdminRole>;

impl<N: Need> FromRequestParts<AppState> for Allowed<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.keys.check(parts, N::ROLE)?;
        Ok(Allowed(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(key: Option<&str>) -> Parts {
        let mut b = Request::builder();
        if let Some(k) = key {
            b = b.header(HEADER, k);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn roles_and_codes() {
        let mut keys = Keys::default();
        keys.add(Role::Enqueue, "e");
        keys.add(Role::Admin, "a");
        let code = |k: Option<&str>, need| keys.check(&parts(k), need).err().map(|e| e.status);
        assert_eq!(code(Some("e"), Role::Enqueue), None);
        assert_eq!(code(Some("a"), Role::Read), None);
        assert_eq!(code(Some("e"), Role::Read).map(|s| s.as_u16()), Some(403));
        assert_eq!(code(Some("x"), Role::Read).map(|s| s.as_u16()), Some(401));
        assert_eq!(code(None, Role::Read).map(|s| s.as_u16()), Some(401));
        assert_eq!(
            Keys::default().check(&parts(None), Role::Admin).ok(),
            Some(())
        );
    }
}
