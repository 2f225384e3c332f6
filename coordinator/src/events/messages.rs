//! The ready-to-send human `message` of each event, in English or French (the wording of the
//! users' Telegram notifications: "🟢 Worker #X réveillé — X jobs en attente").

use super::config::Language;
use super::fanout::Event;
use serde_json::Value;

/// The message of `ev` in `lang`.
pub fn message(ev: &Event, lang: Language) -> String {
    let fr = lang == Language::Fr;
    let d = &ev.data;
    let s = |k: &str| text(d, k);
    let n = |k: &str| d.get(k).and_then(Value::as_i64).unwrap_or(0);
    let agent = ev.agent_id.clone().unwrap_or_else(|| s("agent_id"));
    let queue = ev.queue.clone().unwrap_or_default();
    let lane = ev.lane.clone().unwrap_or_else(|| "-".into());
    let job = ev.job_id.unwrap_or(0);
    match ev.event_type.as_str() {
        "agent.awake" if fr => format!(
            "🟢 Worker {agent} réveillé — {} en attente",
            plural(n("pending"), "job", "jobs")
        ),
        "agent.awake" => format!(
            "🟢 Worker {agent} awake — {} pending",
            plural(n("pending"), "job", "jobs")
        ),
        "agent.asleep" if fr => format!("😴 Worker {agent} en sommeil — queue vide"),
        "agent.asleep" => format!("😴 Worker {agent} asleep — queue empty"),
        "job.failed" if fr => format!(
            "⚠️ Worker {agent} — job {job} échoué ({queue} / {lane}, tentative {}) : {}",
            n("attempts"),
            s("error")
        ),
        "job.failed" => format!(
            "⚠️ Worker {agent} — job {job} failed ({queue} / {lane}, attempt {}): {}",
            n("attempts"),
            s("error")
        ),
        "lane.blocked" if fr => format!(
            "⛔ File {lane} de {queue} bloquée par le job échoué {job} : relancez-le, \
             annulez-le ou débloquez la file"
        ),
        "lane.blocked" => format!(
            "⛔ Lane {lane} of {queue} is blocked by failed job {job}: retry or cancel it, \
             or unblock the lane"
        ),
        "events.summary" => summary(d, &queue, fr),
        "watchdog.alert" => format!("🚨 {}", alert(d, &queue, fr)),
        "watchdog.cleared" if fr => format!(
            "✅ Résolu après {} : {}",
            duration(n("duration_s")),
            alert(d, &queue, fr)
        ),
        "watchdog.cleared" => format!(
            "✅ Resolved after {}: {}",
            duration(n("duration_s")),
            alert(d, &queue, fr)
        ),
        other => format!("{other} {queue} {lane}"),
    }
}

fn text(d: &Value, k: &str) -> String {
    match d.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "45 s", "12 min", "2 h 05".
pub fn duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h {:02}", s / 3600, (s % 3600) / 60),
    }
}

fn summary(d: &Value, queue: &str, fr: bool) -> String {
    let count = d.get("count").and_then(Value::as_i64).unwrap_or(0);
    let window = duration(d.get("window_s").and_then(Value::as_i64).unwrap_or(0));
    let kind = text(d, "event_type");
    let what = match (kind.as_str(), fr) {
        ("job.failed", false) => "jobs failed".to_owned(),
        ("job.failed", true) => "jobs échoués".to_owned(),
        ("lane.blocked", false) => "lanes blocked".to_owned(),
        ("lane.blocked", true) => "files bloquées".to_owned(),
        (other, false) => format!("{other} events"),
        (other, true) => format!("événements {other}"),
    };
    let lanes: Vec<String> = d
        .get("samples")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| text(s, "lane"))
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let error = d
        .get("samples")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .map(|s| text(s, "error"))
        .unwrap_or_default();
    let on = if queue.is_empty() {
        String::new()
    } else if fr {
        format!(" sur {queue}")
    } else {
        format!(" in {queue}")
    };
    let mut m = if fr {
        format!("⚠️ {count} {what} de plus{on} en {window}")
    } else {
        format!("⚠️ {count} more {what}{on} within {window}")
    };
    if !lanes.is_empty() {
        m += &if fr {
            format!(" (ex. : {})", lanes.join(", "))
        } else {
            format!(" (e.g. {})", lanes.join(", "))
        };
    }
    if !error.is_empty() {
        m += &if fr {
            format!(" — dernière erreur : {error}")
        } else {
            format!(" — last error: {error}")
        };
    }
    m
}

/// The condition of a watchdog alert, without emoji (shared by alert and cleared).
fn alert(d: &Value, queue: &str, fr: bool) -> String {
    let n = |k: &str| d.get(k).and_then(Value::as_i64).unwrap_or(0);
    let f = |k: &str| d.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let window = duration(n("window_s"));
    match (text(d, "kind").as_str(), fr) {
        ("queue_depth", false) => format!(
            "{queue}: {} jobs pending (threshold {})",
            n("value"),
            n("threshold")
        ),
        ("queue_depth", true) => format!(
            "{queue} : {} jobs en attente (seuil {})",
            n("value"),
            n("threshold")
        ),
        ("failure_rate", false) => format!(
            "{queue}: {:.1} % of jobs failed over the last {window} ({} of {}, threshold {:.1} %)",
            f("value") * 100.0,
            n("failed"),
            n("finished"),
            f("threshold") * 100.0
        ),
        ("failure_rate", true) => format!(
            "{queue} : {:.1} % des jobs en échec sur les dernières {window} ({} sur {}, seuil {:.1} %)",
            f("value") * 100.0,
            n("failed"),
            n("finished"),
            f("threshold") * 100.0
        ),
        ("slow_jobs", false) => format!(
            "{queue}: average run time {} over the last {window} (threshold {})",
            duration(n("value")),
            duration(n("threshold"))
        ),
        ("slow_jobs", true) => format!(
            "{queue} : durée moyenne d'exécution {} sur les dernières {window} (seuil {})",
            duration(n("value")),
            duration(n("threshold"))
        ),
        ("oldest_wait", false) => format!(
            "{queue}: a ready job has waited {} to start (threshold {})",
            duration(n("value")),
            duration(n("threshold"))
        ),
        ("oldest_wait", true) => format!(
            "{queue} : un job prêt attend depuis {} (seuil {})",
            duration(n("value")),
            duration(n("threshold"))
        ),
        ("no_agent", false) => format!(
            "{queue}: {} ready and no worker connected",
            plural(n("value"), "job", "jobs")
        ),
        ("no_agent", true) => format!(
            "{queue} : {} prêt(s) et aucun worker connecté",
            plural(n("value"), "job", "jobs")
        ),
        ("heartbeat_missing", false) => format!(
            "Worker {} holds job {} of {queue} but sent no heartbeat for {}",
            text(d, "agent_id"),
            n("job_id"),
            duration(n("value"))
        ),
        ("heartbeat_missing", true) => format!(
            "Le worker {} détient le job {} de {queue} mais ne donne plus signe de vie depuis {}",
            text(d, "agent_id"),
            n("job_id"),
            duration(n("value"))
        ),
        (kind, _) => format!("{queue}: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(t: &str, data: Value) -> Event {
        Event {
            id: 1,
            event_type: t.into(),
            queue: Some("invoices".into()),
            lane: Some("resto-42".into()),
            job_id: Some(17),
            agent_id: None,
            data,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn messages_in_both_languages() {
        let mut awake = ev("agent.awake", json!({"pending": 5}));
        awake.agent_id = Some("agent-2".into());
        awake.queue = None;
        assert_eq!(
            message(&awake, Language::En),
            "🟢 Worker agent-2 awake — 5 jobs pending"
        );
        assert_eq!(
            message(&awake, Language::Fr),
            "🟢 Worker agent-2 réveillé — 5 jobs en attente"
        );
        let failed = ev(
            "job.failed",
            json!({"attempts": 3, "error": "timeout", "agent_id": "agent-1"}),
        );
        assert_eq!(
            message(&failed, Language::Fr),
            "⚠️ Worker agent-1 — job 17 échoué (invoices / resto-42, tentative 3) : timeout"
        );
        let depth = ev(
            "watchdog.cleared",
            json!({"kind": "queue_depth", "value": 150, "threshold": 100, "duration_s": 300}),
        );
        assert_eq!(
            message(&depth, Language::En),
            "✅ Resolved after 5 min: invoices: 150 jobs pending (threshold 100)"
        );
        let sum = ev(
            "events.summary",
            json!({"event_type": "job.failed", "count": 490, "window_s": 60,
                   "samples": [{"lane": "r-1", "error": "x"}, {"lane": "r-2", "error": "boom"}]}),
        );
        assert_eq!(
            message(&sum, Language::En),
            "⚠️ 490 more jobs failed in invoices within 60 s (e.g. r-1, r-2) — last error: boom"
        );
        let mut agents = ev(
            "events.summary",
            json!({"event_type": "agent.awake", "count": 12, "window_s": 60, "samples": []}),
        );
        agents.queue = None;
        assert_eq!(
            message(&agents, Language::En),
            "⚠️ 12 more agent.awake events within 60 s"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(720), "12 min");
        assert_eq!(duration(7500), "2 h 05");
    }
}
