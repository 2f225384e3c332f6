//! The HTTP handler: one `POST` of the payload per job, with the job metadata as
//! `X-Lanes-*` headers and `traceparent`. 2xx completes the job with the body as result;
//! 408 and 429 retry; any other 4xx fails it for good; 5xx, connection errors and timeouts
//! retry. `Retry-After` (seconds or an HTTP date) becomes the retry delay.
//!
//! Must never: follow the job past `stop` — dropping the request closes its connection.

use super::{Outcome, Run, TAIL_BYTES, Timing, error_message, result_json, tail};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// POSTs each job to one URL.
#[derive(Debug, Clone)]
pub struct HttpRunner {
    url: reqwest::Url,
    client: reqwest::Client,
    max_result: usize,
}

/// A response read as far as the agent needs it.
struct Answer {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    body: Vec<u8>,
    overflow: bool,
}

impl HttpRunner {
    /// A runner posting to `url`, accepting bodies up to `max_result` bytes.
    pub fn new(url: reqwest::Url, max_result: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("lanes-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpRunner {
            url,
            client,
            max_result,
        })
    }

    /// Runs the job's request until it is answered or `stop` is cancelled (the supervisor
    /// enforces the deadline through `stop`).
    pub async fn run(&self, meta: &super::JobMeta<'_>, stop: &CancellationToken) -> Run {
        let started = Instant::now();
        let answer = tokio::select! {
            a = self.call(meta) => Some(a),
            _ = stop.cancelled() => None,
        };
        let outcome = match answer {
            None => Outcome::Stopped {
                detail: String::new(),
            },
            Some(Err(e)) => Outcome::Failed {
                error: format!(
                    "HTTP handler {} unreachable: {}",
                    self.url,
                    crate::error_chain(&e)
                ),
                retryable: true,
                retry_after_ms: None,
            },
            Some(Ok(a)) => self.outcome(a, Utc::now()),
        };
        Run {
            outcome,
            timing: Timing {
                started: Some(started),
                ended: Instant::now(),
            },
        }
    }

    async fn call(&self, meta: &super::JobMeta<'_>) -> Result<Answer, reqwest::Error> {
        let mut resp = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .headers(headers(meta))
            .body(meta.job.payload.clone())
            .send()
            .await?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        let mut body = Vec::new();
        let mut overflow = false;
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > self.max_result {
                // No need to read on: the connection is dropped with the response.
                overflow = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
            overflow,
        })
    }

    fn outcome(&self, a: Answer, now: DateTime<Utc>) -> Outcome {
        let text = String::from_utf8_lossy(&a.body);
        let headline = format!("HTTP {}", a.status);
        let failed = |retryable: bool| Outcome::Failed {
            error: error_message(&headline, tail(&text, TAIL_BYTES)),
            retryable,
            retry_after_ms: a.retry_after.as_ref().and_then(|v| retry_after_ms(v, now)),
        };
        let s = a.status;
        if s.is_success() && a.overflow {
            Outcome::Failed {
                error: format!(
                    "the HTTP handler's result is larger than {} bytes",
                    self.max_result
                ),
                retryable: false,
                retry_after_ms: None,
            }
        } else if s.is_success() {
            Outcome::Completed {
                result: result_json(&a.body),
            }
        } else if s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS {
            failed(true)
        } else if s.is_client_error() {
            failed(false)
        } else if s.is_server_error() {
            failed(true)
        } else {
            // 1xx and unfollowed 3xx: the handler is misconfigured, retrying will not help.
            failed(false)
        }
    }
}

/// The job metadata as headers; a value a header cannot carry (a lane key with control
/// characters) is left out.
fn headers(meta: &super::JobMeta<'_>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (_, name, value) in meta.items() {
        match HeaderValue::from_bytes(value.as_bytes()) {
            Ok(v) => {
                map.insert(HeaderName::from_static(name), v);
            }
            Err(_) => tracing::warn!(header = name, "value cannot be sent as a header; left out"),
        }
    }
    map
}

/// `Retry-After` in ms: delta-seconds or an HTTP date (RFC 9110), never negative.
fn retry_after_ms(value: &HeaderValue, now: DateTime<Utc>) -> Option<i64> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?;
    Some((at.with_timezone(&Utc) - now).num_milliseconds().max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> HttpRunner {
        let url = reqwest::Url::parse("http://127.0.0.1:9/").expect("url");
        HttpRunner::new(url, 10).expect("client")
    }

    fn answer(status: u16, body: &str, retry_after: Option<&'static str>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            retry_after: retry_after.map(HeaderValue::from_static),
            body: body.as_bytes().to_vec(),
            overflow: false,
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let now = Utc::now();
        let r = runner();
        assert_eq!(
            r.outcome(answer(200, "{\"a\":1}", None), now),
            Outcome::Completed {
                result: "{\"a\":1}".into()
            }
        );
        assert_eq!(
            r.outcome(answer(204, "", None), now),
            Outcome::Completed { result: "".into() }
        );
        let retryable = |o: Outcome| match o {
            Outcome::Failed {
                retryable,
                retry_after_ms,
                ..
            } => (retryable, retry_after_ms),
            other => panic!("not a failure: {other:?}"),
        };
        assert_eq!(
            retryable(r.outcome(answer(400, "bad", None), now)),
            (false, None)
        );
        assert_eq!(
            retryable(r.outcome(answer(404, "", None), now)),
            (false, None)
        );
        assert_eq!(
            retryable(r.outcome(answer(429, "", Some("3")), now)),
            (true, Some(3000))
        );
        assert_eq!(
            retryable(r.outcome(answer(503, "", None), now)),
            (true, None)
        );
        assert_eq!(
            retryable(r.outcome(answer(500, "", None), now)),
            (true, None)
        );
        let mut big = answer(200, "", None);
        big.overflow = true;
        assert_eq!(retryable(r.outcome(big, now)), (false, None));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .expect("date")
            .with_timezone(&Utc);
        let v = |s: &'static str| retry_after_ms(&HeaderValue::from_static(s), now);
        assert_eq!(v("120"), Some(120_000));
        assert_eq!(v("Wed, 21 Oct 2015 07:28:30 GMT"), Some(30_000));
        assert_eq!(v("Wed, 21 Oct 2015 07:27:00 GMT"), Some(0));
        assert_eq!(v("soon"), None);
    }
}
