"""Remote render workers: the bot hands batches to GPU machines over Redis Streams and takes back results."""
