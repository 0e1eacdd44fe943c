-- Seasons of a guild's challenge leaderboard, numbered from 1 per guild. The newest is current;
-- a moderator starting a new season starts everyone at zero.
CREATE TABLE seasons (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id    INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    started_at  TEXT    NOT NULL,
    started_by  INTEGER NOT NULL,                  -- 0: opened by Easel on the guild's first challenge
    UNIQUE (guild_id, number)
);

-- Prompt challenges: one row per contest, its phase stored so deadlines survive restarts.
CREATE TABLE challenges (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id                INTEGER NOT NULL,
    channel_id              INTEGER NOT NULL,
    theme                   TEXT    NOT NULL,
    phase                   TEXT    NOT NULL
                            CHECK (phase IN ('submissions', 'voting', 'finished', 'cancelled')),
    created_by              INTEGER NOT NULL,
    created_at              TEXT    NOT NULL,
    submit_until            TEXT    NOT NULL,
    vote_until              TEXT    NOT NULL,
    season_id               INTEGER NOT NULL REFERENCES seasons (id),
    entries_per_member      INTEGER NOT NULL DEFAULT 1,
    anonymous               INTEGER NOT NULL DEFAULT 0,
    votes_per_member        INTEGER,                -- NULL: one vote per entry, any number of entries
    shuffle                 INTEGER NOT NULL DEFAULT 0,
    announcement_message_id INTEGER,
    results_message_id      INTEGER                 -- set once the results are posted: never post twice
);

CREATE INDEX challenges_by_phase ON challenges (phase, id);
CREATE INDEX challenges_by_guild ON challenges (guild_id, channel_id, phase);

-- One image entered into a challenge. Withdrawn entries stay (withdrawn_at set) so the history is
-- complete; disqualified ones stay too, and keep blocking the same image from being entered again.
CREATE TABLE entries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge_id        INTEGER NOT NULL REFERENCES challenges (id),
    user_id             INTEGER NOT NULL,
    job_id              INTEGER NOT NULL REFERENCES jobs (id),
    image_index         INTEGER NOT NULL,           -- 1-based within the job's result
    submitted_at        TEXT    NOT NULL,
    withdrawn_at        TEXT,
    disqualified        INTEGER NOT NULL DEFAULT 0,
    gallery_message_id  INTEGER
);

-- An image is entered at most once while its entry stands; the store checks first, this makes sure.
CREATE UNIQUE INDEX entries_one_per_image ON entries (challenge_id, job_id, image_index)
    WHERE withdrawn_at IS NULL;
CREATE INDEX entries_by_challenge ON entries (challenge_id, user_id);

-- A member's vote for an entry; taking a vote back deletes its row.
CREATE TABLE votes (
    entry_id    INTEGER NOT NULL REFERENCES entries (id),
    voter_id    INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    PRIMARY KEY (entry_id, voter_id)
);

CREATE INDEX votes_by_voter ON votes (voter_id);

-- Points a member earned in one finished challenge. Keyed by challenge and member, so finishing
-- a challenge again after a crash never counts anyone twice.
CREATE TABLE season_points (
    season_id       INTEGER NOT NULL REFERENCES seasons (id),
    guild_id        INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    challenge_id    INTEGER NOT NULL REFERENCES challenges (id),
    points          INTEGER NOT NULL,
    won             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (challenge_id, user_id)
);

CREATE INDEX season_points_by_season ON season_points (guild_id, season_id);
