//! The Lanes agent: leases one job at a time from a coordinator, runs its handler (a
//! subprocess or an HTTP call), heartbeats while it runs, and reports the outcome. It holds
//! nothing durable: kill it at any moment and the job's lease lapses and is re-delivered.
//!
//! Where things happen: [`config`] (flags and env vars), [`connection`] (addresses,
//! reconnection, auth, every RPC), [`lease_loop`] (lease → run → report, sleeping on the
//! wake stream), [`supervise`] (one job: handler, heartbeats, time limits), [`heartbeat`],
//! [`runner`] (`exec`, `persistent` and `http` handlers), [`shutdown`] (SIGTERM/SIGINT).

pub mod config;
pub mod connection;
pub mod heartbeat;
pub mod lease_loop;
pub mod runner;
pub mod shutdown;
pub mod supervise;

/// An error and its causes on one line ("transport error: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
