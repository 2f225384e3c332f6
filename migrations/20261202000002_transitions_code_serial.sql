-- The release order of the installed transition functions. A replica installs its own set
-- only over an older one (a lower serial): an old replica that restarts in the middle of a
-- rolling deploy keeps the newer set instead of putting its own back under the new replicas,
-- whose calls to the functions only the newer set has would then fail. A newer set keeps
-- every older signature (transitions/mod.rs), so the old replica's calls still work.
-- 0: every set installed before the serial existed.
ALTER TABLE transitions_code ADD COLUMN serial bigint NOT NULL DEFAULT 0;
