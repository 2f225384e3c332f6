//! The line protocol of persistent handlers (docs/handlers.md, "The line protocol"): the job
//! line the agent writes, the process's stdout cut into capped lines, and what each line
//! means for the running job.

use super::super::exec::failed;
use super::super::{JobMeta, Outcome, Progress, TAIL_BYTES, rfc3339, tail};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

/// The process's stdout split into lines of at most `cap` bytes; cancel-safe: a partial line
/// waits in `line` until its end arrives.
pub(super) struct Lines<R> {
    reader: R,
    cap: usize,
    line: Vec<u8>,
    overlong: bool,
}

/// One stdout line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The line without its newline.
    Text(Vec<u8>),
    /// Longer than the cap (its bytes were dropped).
    TooLong,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    pub(super) fn new(reader: R, cap: usize) -> Self {
        Lines {
            reader,
            cap,
            line: Vec::new(),
            overlong: false,
        }
    }

    /// The next line; `None` at end-of-file.
    pub(super) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if self.line.is_empty() && !self.overlong {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (part, used, ended) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !self.overlong {
                if self.line.len() + part.len() > self.cap {
                    self.overlong = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            self.reader.consume(used);
            if ended {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Line {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overlong) {
            Line::TooLong
        } else {
            Line::Text(line)
        }
    }
}

/// The job as one JSON line: its metadata, then the payload text as enqueued.
pub(super) fn job_line(meta: &JobMeta<'_>) -> Vec<u8> {
    let j = meta.job;
    let head = serde_json::json!({
        "type": "job",
        "id": j.id,
        "queue": j.queue,
        "lane": j.lane,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "fencing_token": j.lease_token,
        "deadline": rfc3339(meta.deadline),
        "soft_deadline": meta.soft_deadline.map(rfc3339),
        "traceparent": meta.traceparent,
        "tracestate": meta.tracestate,
    })
    .to_string();
    let payload = j.payload.trim();
    // The payload's own text is kept (number precision, key order). Raw line breaks in JSON
    // text can only be whitespace between tokens (strings escape theirs), so they go.
    let payload = if payload.is_empty() {
        "null".to_owned()
    } else if serde_json::from_str::<Value>(payload).is_ok() {
        payload.replace(['\n', '\r'], " ")
    } else {
        // Not JSON (the coordinator checks payloads, so not expected): sent as a string.
        Value::String(payload.to_owned()).to_string()
    };
    let mut line = head.into_bytes();
    line.pop(); // the closing brace
    line.extend_from_slice(b",\"payload\":");
    line.extend_from_slice(payload.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// What a stdout line means for the running job.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Progress(Progress),
    Done(Outcome),
    /// Not part of the protocol for this job: why.
    Other(&'static str),
}

/// Reads one stdout line of the process while job `id` runs.
pub(super) fn parse_reply(line: &[u8], id: i64, max_result: usize) -> Reply {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line) else {
        return Reply::Other("handler stdout line is not a JSON object");
    };
    if let Some(other) = obj.get("id")
        && other.as_i64() != Some(id)
    {
        return Reply::Other("handler stdout line names another job");
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("progress") => match obj.get("percent").and_then(Value::as_f64) {
            Some(percent) if percent.is_finite() => Reply::Progress(Progress {
                percent: percent.clamp(0.0, 100.0).round() as i32,
                message: text(&obj, "message").unwrap_or_default(),
            }),
            _ => Reply::Other("progress line without a numeric percent"),
        },
        Some("result") => {
            let result = match obj.get("result") {
                None | Some(Value::Null) => String::new(),
                Some(v) => v.to_string(),
            };
            if result.len() > max_result {
                let error = format!("the handler's result is larger than {max_result} bytes");
                return Reply::Done(failed(error, false));
            }
            Reply::Done(Outcome::Completed { result })
        }
        Some("error") => {
            let error = text(&obj, "error")
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "the handler reported an error".to_owned());
            Reply::Done(Outcome::Failed {
                error: tail(&error, TAIL_BYTES).to_owned(),
                retryable: obj
                    .get("retryable")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                retry_after_ms: obj
                    .get("retry_after_ms")
                    .and_then(Value::as_i64)
                    .filter(|&ms| ms >= 0),
            })
        }
        _ => Reply::Other("handler stdout line has no known type"),
    }
}

/// A field as text: a string as is, anything else as JSON.
fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use lanes_proto::v1::LeasedJob;

    #[tokio::test]
    async fn lines_are_split_and_capped() {
        let data: &[u8] = b"short\n0123456789abc\nlast";
        let mut lines = Lines::new(data, 10);
        let mut seen = Vec::new();
        while let Some(l) = lines.next_line().await.expect("read") {
            seen.push(l);
        }
        assert_eq!(
            seen,
            [
                Line::Text(b"short".to_vec()),
                Line::TooLong,
                Line::Text(b"last".to_vec())
            ]
        );
    }

    #[test]
    fn replies_map_to_progress_and_outcomes() {
        let r = |s: &str| parse_reply(s.as_bytes(), 7, 20);
        assert_eq!(
            r(r#"{"type":"progress","percent":40.4,"message":"step 2/5"}"#),
            Reply::Progress(Progress {
                percent: 40,
                message: "step 2/5".into()
            })
        );
        assert_eq!(
            r(r#"{"type":"result","result":{"pid":12}}"#),
            Reply::Done(Outcome::Completed {
                result: r#"{"pid":12}"#.into()
            })
        );
        assert_eq!(
            r(r#"{"type":"result"}"#),
            Reply::Done(Outcome::Completed { result: "".into() })
        );
        assert_eq!(
            r(r#"{"type":"error","error":"bad VAT","retryable":false}"#),
            Reply::Done(Outcome::Failed {
                error: "bad VAT".into(),
                retryable: false,
                retry_after_ms: None
            })
        );
        assert!(matches!(
            r(r#"{"type":"result","result":"a long string over twenty"}"#),
            Reply::Done(Outcome::Failed {
                retryable: false,
                ..
            })
        ));
        for other in [
            "hello",
            "[1]",
            r#"{"type":"result","id":8}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":"progress"}"#,
        ] {
            assert!(matches!(r(other), Reply::Other(_)), "{other}");
        }
        assert!(matches!(r(r#"{"type":"result","id":7}"#), Reply::Done(_)));
    }

    #[test]
    fn the_job_line_is_one_line_with_the_payload_as_sent() {
        let job = LeasedJob {
            id: 3,
            queue: "q".into(),
            payload: "{\n  \"n\": 12345678901234567890,\n  \"s\": \"a\\nb\"\n}\n".into(),
            ..Default::default()
        };
        let meta = JobMeta {
            job: &job,
            deadline: DateTime::UNIX_EPOCH,
            soft_deadline: None,
            traceparent: String::new(),
            tracestate: String::new(),
        };
        let line = job_line(&meta);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"}\n"));
        let text = String::from_utf8(line).expect("utf-8");
        assert!(text.contains("12345678901234567890"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["type"], "job");
        assert_eq!(v["id"], 3);
        assert_eq!(v["payload"]["s"], "a\nb");
        assert_eq!(v["soft_deadline"], Value::Null);
        assert_eq!(v["deadline"], "1970-01-01T00:00:00.000Z");
    }
}
