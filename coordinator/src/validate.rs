//! Input limits, checked before anything touches the database so bad input changes nothing.
//! The limits are documented in the proto comments and the README.

use crate::error::{Error, Result};

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest lane key or idempotency key, in bytes.
pub const MAX_KEY: usize = 256;
/// Longest agent id, in bytes.
pub const MAX_AGENT_ID: usize = 128;
/// Most queues one agent may serve.
pub const MAX_AGENT_QUEUES: usize = 32;
/// Longest error message kept on a job; longer ones keep their tail.
pub const MAX_ERROR: usize = 8 * 1024;
/// Longest progress message.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Most jobs in one EnqueueBatch.
pub const MAX_BATCH: usize = 1000;

/// Checks a queue name: 1-128 bytes of `[A-Za-z0-9_.:-]`.
pub fn queue_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid("queue name is empty".into()));
    }
    if name.len() > MAX_QUEUE_NAME {
        return Err(Error::Invalid(format!(
            "queue name is {} bytes; the limit is {MAX_QUEUE_NAME}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(Error::Invalid(format!(
            "queue name {name:?} contains {c:?}; allowed are letters, digits and _ . : -"
        )));
    }
    Ok(())
}

/// Checks an optional key (lane, idempotency): empty means absent, else 1-256 bytes.
pub fn optional_key(what: &str, key: &str) -> Result<Option<String>> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_KEY {
        return Err(Error::Invalid(format!(
            "{what} is {} bytes; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(Error::Invalid(format!("{what} contains a NUL character")));
    }
    Ok(Some(key.to_owned()))
}

/// Parses JSON text within `limit` bytes. Empty text is JSON `null` only where `empty_ok`.
pub fn json(what: &str, text: &str, limit: usize, empty_ok: bool) -> Result<serde_json::Value> {
    if text.len() > limit {
        return Err(Error::Invalid(format!(
            "{what} is {} bytes; the limit is {limit}",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return if empty_ok {
            Ok(serde_json::Value::Null)
        } else {
            Err(Error::Invalid(format!("{what} is empty; send JSON text")))
        };
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::Invalid(format!("{what} is not valid JSON: {e}")))?;
    // Postgres jsonb rejects \u0000 in strings; refuse it here rather than fail in the insert.
    if text.contains("\\u0000") {
        return Err(Error::Invalid(format!(
            "{what} contains \\u0000, which is not storable"
        )));
    }
    Ok(value)
}

/// Checks an agent id and its queue list.
pub fn agent(agent_id: &str, queues: &[String]) -> Result<()> {
    if agent_id.is_empty() || agent_id.len() > MAX_AGENT_ID {
        return Err(Error::Invalid(format!(
            "agent_id must be 1-{MAX_AGENT_ID} bytes (got {})",
            agent_id.len()
        )));
    }
    if queues.is_empty() || queues.len() > MAX_AGENT_QUEUES {
        return Err(Error::Invalid(format!(
            "an agent serves 1-{MAX_AGENT_QUEUES} queues (got {})",
            queues.len()
        )));
    }
    queues.iter().try_for_each(|q| queue_name(q))
}

/// Keeps the last `max` bytes of a message (the end of a stderr is what explains it).
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(queue_name("invoice_import").is_ok());
        assert!(queue_name("").is_err());
        assert!(queue_name("a b").is_err());
        assert!(queue_name(&"q".repeat(129)).is_err());
    }

    #[test]
    fn json_limits() {
        assert!(json("payload", "{\"a\":1}", 100, false).is_ok());
        assert!(json("payload", "not json", 100, false).is_err());
        assert!(json("payload", "", 100, false).is_err());
        assert!(json("result", "", 100, true).is_ok());
        assert!(json("payload", "[1,2,3]", 3, false).is_err());
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ééé", 3), "…é");
        assert_eq!(tail("ok", 10), "ok");
    }
}
