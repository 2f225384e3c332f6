//! Recurring schedules: cron expressions in a time zone ([`cron`]) and the scheduler task
//! that fires their ticks ([`scheduler`]). The tables and the tick transaction are
//! `db/schedules.rs`; the gRPC service is `service/schedules.rs`.

pub mod cron;
pub mod scheduler;
