-- Agents with an open WakeStream, on any coordinator replica. Lets one replica wake agents
-- held by another (by claiming them here, then NOTIFY), and lets any replica list them.
CREATE TABLE agents (
    agent_id       text PRIMARY KEY,
    coordinator_id text NOT NULL,
    queues         text[] NOT NULL,
    -- asleep: its last Lease found nothing; awake: working, or woken and about to lease.
    asleep         boolean NOT NULL DEFAULT false,
    asleep_since   timestamptz,
    connected_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_asleep ON agents (asleep_since) WHERE asleep;
