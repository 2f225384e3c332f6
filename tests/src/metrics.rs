//! Scraping a `/metrics` endpoint and reading the Prometheus text exposition format: samples
//! with their labels (escapes included); `# HELP` / `# TYPE` lines are skipped.

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_bucket` / `_sum` / `_count` suffix.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in the order served.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format.
    pub fn parse(text: &str) -> anyhow::Result<Scrape> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| sample(l).with_context(|| format!("bad sample line {l:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Scrape { samples })
    }

    /// The value of the sample `name` whose labels are exactly `labels`, if served.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like `get`, with 0 for a sample not served (a counter never incremented is absent).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every value of label `label` among the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// GETs `url` and parses the answer.
pub async fn scrape(url: &str) -> anyhow::Result<Scrape> {
    let resp = reqwest::get(url).await.context("scraping")?;
    if !resp.status().is_success() {
        bail!("{url} answered {}", resp.status());
    }
    Scrape::parse(&resp.text().await?)
}

fn sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    let value_text = rest.split_whitespace().next().context("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("value {v:?}"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns the labels and what follows the `}`.
fn label_set(mut s: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = s.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("unfinished escape"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() -> anyhow::Result<()> {
        let text = "# TYPE a counter\na_total{queue=\"q \\\"1\\\"\",x=\"y\"} 3\n\
                    b 1.5\nh_bucket{le=\"+Inf\"} 2\n";
        let s = Scrape::parse(text)?;
        assert_eq!(
            s.get("a_total", &[("queue", "q \"1\""), ("x", "y")]),
            Some(3.0)
        );
        assert_eq!(s.get("b", &[]), Some(1.5));
        assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(s.value("missing", &[]), 0.0);
        assert!(Scrape::parse("c{a=\"1} 2").is_err());
        Ok(())
    }
}
