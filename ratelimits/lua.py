"""Lua steps for scripts that share a rate through Redis; a script concatenates them with its own."""

from __future__ import annotations

# Sets ``now``: Redis's clock, in milliseconds.
NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Needs ``now``. KEYS[1]: the log (a sorted set).  ARGV: limit, window ms, member.  Logs the member and
# returns 0 when fewer than ``limit`` were logged in the last ``window``, else the milliseconds until the
# oldest of them leaves it.
SLIDING_LOG = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now + 1)
"""
