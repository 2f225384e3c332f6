//! The states of jobs, lanes and deliveries, mirroring the PostgreSQL enums of the same
//! names (migrations/): the state machine written down twice, the two agreeing. Every
//! change of state is a function of `transitions/`.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};
use std::str::FromStr;

/// The life of a job; mirrors `CREATE TYPE job_state` (the public API shows `Scheduled` as
/// pending: waiting, with a `run_at` in the future).
///
/// ```text
///  enqueue ─▶ scheduled ─promote (run_at passed)─▶ pending ─lease─▶ running ─complete─▶ completed
///                  │ (unkeyed only: a keyed job     ▲  │              │
///                  │  waits in its lane, whose row  │  │              ├─fail, attempts left, or the
///                  │  is scheduled instead)         │  │              │ lease expired ─▶ scheduled /
///                  │                                │  │              │ pending (still its lane's head)
///                  │                                │  │              ├─fail, exhausted or permanent─▶ failed
///                  │                                │  │              └─cancel requested, agent stops─▶ cancelled
///                  └────────cancel──────────────────┼──┴─cancel─▶ cancelled
///                                    retry (operator): failed, cancelled ─▶ pending
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Unkeyed, waiting for its `run_at` (a delay or a retry backoff).
    Scheduled,
    /// Unkeyed: due, leasable. Keyed: in its lane, as its head or waiting behind it.
    Pending,
    /// Leased by an agent holding its fencing token.
    Running,
    /// Finished successfully.
    Completed,
    /// Attempts exhausted or a permanent failure: the dead-letter set.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

/// A lane row's state; mirrors `CREATE TYPE lane_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "lane_state", rename_all = "lowercase")]
pub enum LaneState {
    /// Its head waits for its `run_at`.
    Scheduled,
    /// Its head may be leased now.
    Ready,
    /// Its head is leased.
    Running,
    /// Its head failed under the `block` policy.
    Blocked,
}

/// A webhook delivery's state; mirrors `CREATE TYPE delivery_state`.
///
/// ```text
/// pending ─lease─▶ delivering ─2xx─▶ delivered
///    ▲                 ├─other answer, tries left─▶ pending (backing off)
///    │                 ├─other answer, last try─▶ failed
///    │                 └─410─▶ disabled
///    └──── replay (operator): failed, disabled, pending; delivered when named by id
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "delivery_state", rename_all = "lowercase")]
pub enum DeliveryState {
    /// Due (now or after its backoff).
    Pending,
    /// A replica is sending it.
    Delivering,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every try failed.
    Failed,
    /// The endpoint answered 410 Gone.
    Disabled,
}

impl JobState {
    /// Every state, in the order of the SQL enum.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name PostgreSQL spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for completed, failed and cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

// By hand rather than derived: besides columns of type job_state, a job state also arrives
// as text inside the `job_view` record, which a derived enum would refuse.
impl Type<Postgres> for JobState {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("job_state")
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        *ty == Self::type_info() || <&str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for JobState {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl Decode<'_, Postgres> for JobState {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::JobState;

    #[test]
    fn job_states_round_trip_through_their_names() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert!("processing".parse::<JobState>().is_err());
        assert!(JobState::Cancelled.is_finished() && !JobState::Scheduled.is_finished());
    }
}
