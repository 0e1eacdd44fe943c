-- The languages a job's messages speak, as Discord locales ('zh-CN'; '' means English): the
-- member's, for what answers them alone, and the server's, for what many members see. The worker
-- posts long after the interaction, so they are kept with the job.
ALTER TABLE jobs ADD COLUMN locale TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN guild_locale TEXT NOT NULL DEFAULT '';
