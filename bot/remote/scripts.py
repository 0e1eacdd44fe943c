"""The Lua scripts that make a worker's lease checks and its completion atomic on the Redis server."""

from __future__ import annotations

# Take the oldest entry idle past the lease (its worker died or froze) and lease it to ourselves,
# in one step, so no second worker can slip in between the claim and the lease.
# KEYS: stream. ARGV: group, consumer, lease ms, lease key prefix.
RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', 1)
local entry = r[2][1]
if entry == nil then return nil end
redis.call('SET', ARGV[4] .. entry[1], ARGV[2], 'PX', ARGV[3])
return entry
"""

# Extend our lease, and reset the entry's idle time (XCLAIM JUSTID to ourselves) so XAUTOCLAIM
# leaves it alone; refused (0) once the lease is gone or another worker holds it.
# KEYS: stream, lease. ARGV: consumer, lease ms, group, entry id.
RENEW = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('XCLAIM', KEYS[1], ARGV[3], ARGV[1], 0, ARGV[4], 'JUSTID')
return 1
"""

# Publish a batch's results and retire its entry, only while we still hold its lease: a worker
# that lost the lease (frozen past it) can never complete a batch another worker has taken.
# KEYS: stream, lease, completions. ARGV: consumer, group, entry id, then completion fields.
COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""

# Hand a batch to the workers and record it for a restarted bot in one step: a batch is in the
# stream exactly when the bot's record of it is (AOF logs a script whole). Creates the workers'
# group too, for a Redis that restarted without its data.
# KEYS: stream, in-flight hash. ARGV: batch id, its record, workers' group, then entry fields.
SEND = """
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[3], '0', 'MKSTREAM')
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return id
"""
