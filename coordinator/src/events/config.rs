//! Settings of global events and of the watchdog (flags and environment variables).

use clap::{Args, ValueEnum};

/// Language of the ready-to-send `message` of each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English (default).
    #[default]
    En,
    /// French.
    Fr,
}

impl Language {
    /// `en` or `fr`.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
        }
    }
}

/// Global events: where they go, in which language, and how floods are coalesced.
#[derive(Debug, Args, Clone)]
pub struct EventArgs {
    /// Global event endpoints, a JSON array:
    /// `[{"url":"https://n8n/webhook/lanes","secret":"whsec_…","types":["agent.*","job.failed"],
    /// "queues":["invoices"],"language":"fr","name":"telegram"}]`. Only `url` is required;
    /// no `types`/`queues` = every event. Unset: events are not sent.
    #[arg(
        long,
        env = "LANES_EVENT_ENDPOINTS",
        hide_env_values = true,
        verbatim_doc_comment
    )]
    pub event_endpoints: Option<String>,

    /// Default language of event messages (an endpoint's `language` overrides it).
    #[arg(long, env = "LANES_EVENTS_LANGUAGE", value_enum, default_value_t = Language::En)]
    pub events_language: Language,

    /// Flood control: at most this many events of one type and queue per endpoint and
    /// window; the rest are summed up in one summary event at the end of the window.
    #[arg(long, env = "LANES_EVENTS_FLOOD_LIMIT", default_value_t = 10)]
    pub events_flood_limit: i64,

    /// Flood-control window (ms).
    #[arg(long, env = "LANES_EVENTS_FLOOD_WINDOW_MS", default_value_t = 60_000)]
    pub events_flood_window_ms: i64,

    /// An agent's awake/asleep change is announced once it has held this long (ms), so an
    /// agent that falls asleep and is woken at once announces nothing.
    #[arg(long, env = "LANES_EVENTS_DEBOUNCE_MS", default_value_t = 2_000)]
    pub events_debounce_ms: i64,

    /// How often the watchdog evaluates its conditions (ms; 0 = off).
    #[arg(long, env = "LANES_WATCHDOG_INTERVAL_MS", default_value_t = 30_000)]
    pub watchdog_interval_ms: u64,

    /// Alert when a queue holds more pending jobs than this.
    #[arg(long, env = "LANES_WATCHDOG_MAX_PENDING", default_value_t = 100)]
    pub watchdog_max_pending: i64,

    /// Alert when more than this share of the jobs finished in the window failed (0–1).
    #[arg(long, env = "LANES_WATCHDOG_MAX_FAILURE_RATE", default_value_t = 0.05)]
    pub watchdog_max_failure_rate: f64,

    /// ... counted only once at least this many jobs finished in the window.
    #[arg(long, env = "LANES_WATCHDOG_MIN_FINISHED", default_value_t = 20)]
    pub watchdog_min_finished: i64,

    /// Alert when the average run time of the jobs completed in the window exceeds this (s).
    #[arg(long, env = "LANES_WATCHDOG_MAX_AVG_RUN_S", default_value_t = 300)]
    pub watchdog_max_avg_run_s: i64,

    /// The window of the failure-rate and run-time conditions (s).
    #[arg(long, env = "LANES_WATCHDOG_WINDOW_S", default_value_t = 900)]
    pub watchdog_window_s: i64,

    /// Alert when a ready job has waited longer than this to start (s).
    #[arg(long, env = "LANES_WATCHDOG_MAX_WAIT_S", default_value_t = 600)]
    pub watchdog_max_wait_s: i64,

    /// Alert when jobs have been ready this long (s) with no agent connected for their queue.
    #[arg(long, env = "LANES_WATCHDOG_NO_AGENT_S", default_value_t = 60)]
    pub watchdog_no_agent_s: i64,
}
