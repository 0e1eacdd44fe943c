-- The "a tenth of the time left" reminder of each phase, once posted: never posted twice, even
-- across a restart (the message id is stored after the post; its nonce covers the gap).
ALTER TABLE challenges ADD COLUMN submit_reminder_message_id INTEGER;
ALTER TABLE challenges ADD COLUMN vote_reminder_message_id INTEGER;

-- 1: the job was answered ephemerally (the member's /prefer private, or made from a private
-- result). Delivery needs it after the interaction token is gone: such a result then goes to the
-- channel with a line saying why.
ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
