-- The "a tenth of the time left" reminder of each phase, once posted: never posted twice, even
-- across a restart (the message id is stored after the post; its nonce covers the gap).
ALTER TABLE challenges ADD COLUMN submit_reminder_message_id INTEGER;
ALTER TABLE challenges ADD COLUMN vote_reminder_message_id INTEGER;
