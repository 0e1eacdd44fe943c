-- Jobs are the durable unit of work: one row from request to posted result.
CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id            INTEGER NOT NULL,
    channel_id          INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    kind                TEXT    NOT NULL,
    backend             TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    params              TEXT    NOT NULL,          -- JSON of JobParams
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    app_id              INTEGER,
    token               TEXT,                      -- interaction token, usable for 15 minutes
    token_created_at    TEXT,
    status_message_id   INTEGER,                   -- the deferred response we edit with positions
    parent_id           INTEGER REFERENCES jobs (id),
    parent_index        INTEGER,
    upload_limit        INTEGER NOT NULL,
    images              TEXT    NOT NULL DEFAULT '[]',
    source_path         TEXT,
    made_by             TEXT    NOT NULL DEFAULT '',
    usage               TEXT,
    error               TEXT    NOT NULL DEFAULT '',
    message_id          INTEGER,
    posted_channel_id   INTEGER,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_by_status ON jobs (status, backend, id);
CREATE INDEX jobs_by_member ON jobs (guild_id, user_id, status);

-- Fair scheduling state: the turn number at which a guild (user_id = 0) or a member of a
-- guild was last served, per backend. Least recently served goes first: round-robin.
CREATE TABLE turns (
    backend     TEXT    NOT NULL,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    last_turn   INTEGER NOT NULL,
    PRIMARY KEY (backend, guild_id, user_id)
);
