//! Configured global event endpoints (`LANES_EVENT_ENDPOINTS`) and their filters.

use super::config::Language;
use anyhow::{Context, bail};
use serde::Deserialize;

/// One endpoint, as configured.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Name stored with each delivery (default: the URL's host and path).
    #[serde(default)]
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// Signing secret (`whsec_<base64>`); default: the callbacks' `LANES_WEBHOOK_SECRET`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Event types sent (`agent.*` matches a prefix); empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Queues whose events are sent; empty: all. Events of no queue (agents) match when
    /// the agent serves one of these queues.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Message language; default `--events-language`.
    #[serde(default)]
    pub language: Option<Language>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret (nor the URL, which may carry a token).
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("types", &self.types)
            .field("queues", &self.queues)
            .finish()
    }
}

/// Parses and checks the JSON array of endpoints; each gets a unique `name`.
pub fn parse(json: &str) -> anyhow::Result<Vec<Endpoint>> {
    let mut list: Vec<Endpoint> = serde_json::from_str(json).context(
        "LANES_EVENT_ENDPOINTS must be a JSON array of {\"url\", \"secret\", \"types\", \
         \"queues\", \"language\", \"name\"} objects",
    )?;
    let mut names = std::collections::HashSet::new();
    for (i, e) in list.iter_mut().enumerate() {
        let url = reqwest::Url::parse(&e.url)
            .with_context(|| format!("event endpoint {i}: url is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("event endpoint {i}: url must be http or https");
        }
        if e.name.trim().is_empty() {
            e.name = format!("{}{}", url.host_str().unwrap_or(""), url.path());
        }
        if !names.insert(e.name.clone()) {
            bail!(
                "event endpoint {i}: name {:?} is used twice; give each a distinct \"name\"",
                e.name
            );
        }
        if let Some(s) = &e.secret {
            crate::dispatch::decode_secret(s)
                .with_context(|| format!("event endpoint {:?}: secret", e.name))?;
        }
    }
    Ok(list)
}

impl Endpoint {
    /// Whether an event of `event_type` about `queues` (none: not about a queue) goes here.
    pub fn wants(&self, event_type: &str, queues: &[String]) -> bool {
        let type_ok = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => t == event_type,
            });
        let queue_ok = self.queues.is_empty()
            || queues.is_empty()
            || queues.iter().any(|q| self.queues.contains(q));
        type_ok && queue_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_type_prefix_and_queue() {
        let list = parse(
            r#"[{"url":"http://n8n:5678/webhook/a","types":["agent.*","job.failed"],"queues":["invoices"]},
                {"url":"http://n8n:5678/webhook/b","name":"all"}]"#,
        )
        .unwrap_or_default();
        assert_eq!(list.len(), 2);
        let (a, all) = (&list[0], &list[1]);
        assert_eq!(a.name, "n8n/webhook/a");
        let q = |s: &str| vec![s.to_owned()];
        assert!(a.wants("agent.awake", &q("invoices")));
        assert!(a.wants("job.failed", &q("invoices")));
        assert!(!a.wants("job.failed", &q("pdf")));
        assert!(!a.wants("lane.blocked", &q("invoices")));
        assert!(a.wants("agent.asleep", &[]));
        assert!(all.wants("watchdog.alert", &q("pdf")));
    }

    #[test]
    fn refuses_bad_endpoints() {
        assert!(parse("{}").is_err());
        assert!(parse(r#"[{"url":"ftp://x"}]"#).is_err());
        assert!(parse(r#"[{"url":"http://x","secret":"nope"}]"#).is_err());
        assert!(parse(r#"[{"url":"http://x/a"},{"url":"http://x/a"}]"#).is_err());
        assert!(parse(r#"[{"url":"http://x","typo":1}]"#).is_err());
    }
}
