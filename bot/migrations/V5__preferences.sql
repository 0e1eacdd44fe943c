-- A member's own defaults in one server (/prefer); NULL means "not set": the server's or the
-- backend's default applies, and a slash option always wins.
CREATE TABLE preferences (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    aspect      TEXT,
    quality     TEXT,
    count       INTEGER,
    negative    TEXT    NOT NULL DEFAULT '',  -- added to every request's negative prompt
    private     INTEGER NOT NULL DEFAULT 0,   -- 1: results are sent only to the member
    remix       INTEGER NOT NULL DEFAULT 0,   -- 1: the creative tools offer remixing
    PRIMARY KEY (guild_id, user_id)
);

-- /history pages behind Previous/Next buttons: a button carries one row's id, the row says
-- whose page it is, which page and what the member searched for (custom ids carry ids only).
-- One row per distinct page, reused by every button that leads there.
CREATE TABLE history_pages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    search      TEXT    NOT NULL,
    page        INTEGER NOT NULL,
    UNIQUE (guild_id, user_id, search, page)
);

-- /history lists a member's jobs newest first.
CREATE INDEX jobs_by_member_time ON jobs (guild_id, user_id, id);
