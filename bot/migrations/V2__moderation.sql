-- Per-guild settings that moderators change with /settings: one row per key that differs from
-- the default, the value as JSON. Resetting a key deletes its row.
CREATE TABLE guild_settings (
    guild_id    INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    updated_by  INTEGER NOT NULL,
    PRIMARY KEY (guild_id, key)
);

-- What each job costs against quotas and budgets: reserved in the transaction that accepts the
-- job, settled when its result is posted, released when it fails or is cancelled. Quotas count
-- reserved and settled charges, so a member cannot exceed a limit with requests in flight.
CREATE TABLE charges (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs (id),
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    backend     TEXT    NOT NULL,
    cost        INTEGER NOT NULL,              -- quota units (moderators set the cost of each action)
    images      INTEGER NOT NULL,              -- images rendered, for the monthly image budget
    usd         REAL    NOT NULL DEFAULT 0,    -- estimated spend (OpenAI), for the monthly spend budget
    state       TEXT    NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    created_at  TEXT    NOT NULL
);

CREATE INDEX charges_by_member ON charges (guild_id, user_id, created_at);
CREATE INDEX charges_by_guild ON charges (guild_id, created_at);

-- Members who were told, once, that they are banned from generating in a guild.
CREATE TABLE ban_notices (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
