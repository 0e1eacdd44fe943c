-- Who may see a result again (/show and the buttons under it).
-- public_id: the id /show takes, random so that results cannot be walked by counting; new jobs get
-- 10 characters of base32 from Python's secrets, existing ones 16 hex digits (64 random bits, so
-- the unique index below cannot meet a collision in any real database).
ALTER TABLE jobs ADD COLUMN public_id TEXT;
UPDATE jobs SET public_id = lower(hex(randomblob(8)));
CREATE UNIQUE INDEX jobs_by_public_id ON jobs (public_id);
-- When a member or moderator removed the result with 🗑️ Delete: it is never shown or used again.
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;
-- 1: the safety checker flagged the images (posted because the channel is age-restricted); they
-- are only ever shown again in age-restricted channels.
ALTER TABLE jobs ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;
