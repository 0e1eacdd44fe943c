-- Members' data: /mydata delete, /settings purge member, the retention_days sweep, and the purge of
-- servers that removed Easel.

-- When a job's prompts and images were removed (retention, or its member's deletion). The row stays
-- for what still needs it (the budgets' charges, the jobs made from it, the 🗑️ Delete of a result
-- still posted); its content is gone.
ALTER TABLE jobs ADD COLUMN scrubbed_at TEXT;
-- The retention sweep reads only what it has still to remove, never what it removed before.
CREATE INDEX jobs_unscrubbed ON jobs (guild_id, created_at) WHERE scrubbed_at IS NULL;

-- Servers that removed Easel: their data goes [storage] purge_after_days after left_at, unless
-- Easel is added back first (the row is then deleted).
CREATE TABLE departed_guilds (
    guild_id    INTEGER PRIMARY KEY,
    left_at     TEXT    NOT NULL
);

-- A member's deletion still to finish: their quota charges of the last week keep their member id
-- until the widest quota window (a week) has passed since asked_at, so that deleting one's data
-- is no way around the daily and weekly quotas. The sweep then drops the id and this row.
CREATE TABLE forget_requests (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    asked_at    TEXT    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
