-- Operator replays (AdminService.ReplayDeliveries) and retention of the outbox.
--
-- A replay gives a delivery a fresh retry budget, but `attempts` is also the fencing token
-- of a delivery lease and must only grow (a replica still holding an old lease must not be
-- able to record its outcome). So tries left are counted from `attempts_base`: the value of
-- `attempts` at the last replay (0 before any).
ALTER TABLE outbox ADD COLUMN attempts_base int NOT NULL DEFAULT 0;

-- The operator view lists what is not delivered, newest first; this index holds only those
-- rows, so the list never wades through the (many) delivered ones.
CREATE INDEX outbox_undelivered ON outbox (id) WHERE state <> 'delivered';

-- Retention deletes delivered rows by age, oldest first.
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE state = 'delivered';
