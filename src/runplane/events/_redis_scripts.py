"""The Lua scripts of `RedisBus` (runplane.events.redis): each is one atomic step on a run's stream.

Every script takes the stream key as KEYS[1] and reads "ended" from the last entry being the end
sentinel (field `end`), so that checking and appending are one step: a late publish can never land
after the end.
"""

from __future__ import annotations

# Each script takes the stream key and reports "ended" by the last entry being the sentinel, so the
# check and the append are one atomic step (a late publish can never land after the end).
PUBLISH = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 2)
if last[1] and last[1][2][1] == 'end' then
  if last[2] then return last[2][1] end
  return '0-0'
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], id)
return id
"""

# On a stream that does not exist, the end is marked `guard`: it was written for a run that is over
# in the database by a process that has not seen its events (`RunManager.stream_run`), or Redis lost
# the stream; a publisher that buffered the run's events while Redis was down may still deliver them
# (`REPLAY` replaces the guard), so a resuming reader gives it a moment.
END = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] and last[1][2][1] == 'end' then return 0 end
local id
if last[1] then
  id = redis.call('XADD', KEYS[1], '*', 'end', '1')
else
  id = redis.call('XADD', KEYS[1], '*', 'end', '1', 'guard', '1')
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], id)
return 1
"""

# Delivers events buffered while Redis was down (`ResilientBus`), with the end mark when the run ended
# meanwhile. An end sentinel already at the tail was written by a reader's guard for a run that is
# terminal in the database (`RunManager.stream_run`) before these events arrived: the real end is the
# one in this batch, so the guard's is taken off, the events appended, and the end put back.
# ARGV: the end flag, retention seconds, idle TTL seconds, max events, wake channel, then
# event/data pairs.
REPLAY = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] and last[1][2][1] == 'end' then redis.call('XDEL', KEYS[1], last[1][1]) end
local id = '0-0'
for i = 6, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
end
if ARGV[1] == '1' then
  redis.call('XADD', KEYS[1], '*', 'end', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], id)
return id
"""

# Returns {state, entries}. The state is only computed when nothing follows `after`: 1 when the
# stream ended (so a resume from at or past the sentinel stops instead of waiting forever), 2 when
# the stream does not exist (not started yet, or expired).
READ = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local state = 0
if #entries == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if not last[1] then state = 2 elseif last[1][2][1] == 'end' then state = 1 end
end
return {state, entries}
"""
ENDED, MISSING = 1, 2

# Appends batches of events of several runs (`RedisBus.publish_many`), each run's followed by its
# end mark when its end flag is '1', then publishes the hints given with them: one script call for
# a whole flush, where one per run inside a MULTI/EXEC cost a command each, the transaction's two
# and redis-py's SCRIPT EXISTS before it, and each hint a PUBLISH of its own. A run's batch is
# dropped whole once its stream ended, as `PUBLISH` and `END` drop theirs. One wake-up per run.
# KEYS: the runs' streams. ARGV: max events, idle TTL seconds, retention seconds, the number of
# hints, that many channel/message pairs, then for each key in order: its wake channel, its end
# flag, its number of events, and that many event/data pairs.
PUBLISH_MANY = """
local hints = tonumber(ARGV[4])
local at = 5 + 2 * hints
for k = 1, #KEYS do
  local key, wake, ends, count = KEYS[k], ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local first = at + 3
  at = first + 2 * count
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if not (last[1] and last[1][2][1] == 'end') then
    local id = false
    for i = first, at - 1, 2 do
      id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
    end
    if ends == '1' then
      if id or last[1] then
        id = redis.call('XADD', key, '*', 'end', '1')
      else
        id = redis.call('XADD', key, '*', 'end', '1', 'guard', '1')
      end
      redis.call('EXPIRE', key, ARGV[3])
    elseif id then
      redis.call('EXPIRE', key, ARGV[2])
    end
    if id then redis.call('PUBLISH', wake, id) end
  end
end
for i = 5, 4 + 2 * hints, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return 1
"""
