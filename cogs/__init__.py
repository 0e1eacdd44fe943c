"""Discord-facing extensions, one per user-facing feature."""
