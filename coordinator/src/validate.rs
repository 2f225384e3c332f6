//! Input checks, run before anything touches the database so bad input changes nothing. The
//! limits themselves are `lanes_proto::limits` and the callback URL rules
//! `lanes_proto::urls`, both shared with the gateway.

use crate::error::Result;
use lanes_proto::limits;
pub use lanes_proto::limits::{MAX_BATCH, MAX_ERROR, MAX_PROGRESS_MESSAGE, tail};

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
