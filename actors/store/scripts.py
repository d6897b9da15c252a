"""The Lua scripts of the store: every write that touches several keys at once is one of them (or a MULTI/EXEC
transaction in the module that makes it), so a crash never leaves half a council or a record without its index.
The methods that call them (records.py, councils.py) must change with them."""

# KEYS: the record, the council's active set, stats; ARGV: record JSON, record id, max active (0: no limit),
# the `accepted.<ROLE>` counter. 0: the id exists (a retry); 1: created (and counted);
# -(n + 1): not created, the council has n >= max active.
CREATE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local cap = tonumber(ARGV[3])
local active = redis.call('SCARD', KEYS[2])
if cap > 0 and active >= cap then return -(active + 1) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
"""

# Is a stored record (JSON) finished? Shared by the scripts below.
FINISHED_LUA = """
local function finished(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then return false end
  local s = rec['status']
  return s == 'completed' or s == 'failed' or s == 'timeout'
end
"""

# KEYS: record, owner. Take ownership of an unfinished record: the new owner epoch, or
# -1: no such record (expired, never written); -2: finished (immutable, nothing to run).
CLAIM_RECORD = FINISHED_LUA + """
local raw = redis.call('GET', KEYS[1])
if not raw then return -1 end
if finished(raw) then return -2 end
return redis.call('INCR', KEYS[2])
"""

# KEYS: record, owner; ARGV: record JSON, epoch ('' : take ownership now).
# {1, epoch}: written; {-1, owner}: a newer owner holds it; {-2, owner}: gone; {-3, owner}: finished.
CHECKPOINT_RECORD = FINISHED_LUA + """
local owner = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and owner ~= tonumber(ARGV[2]) then return {-1, owner} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {-2, owner} end
if finished(raw) then return {-3, owner} end
if ARGV[2] == '' then owner = redis.call('INCR', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1])
return {1, owner}
"""

# KEYS: record, owner, active set, stage events, councils:events, stats, durations.
# ARGV: record JSON, epoch ('' : take ownership now), TTL, id, terminal kind, terminal data ('' : none),
#       feed kind, feed data ('' : none), duration ('' : none), durations kept, events maxlen, feed maxlen,
#       then stats field/increment pairs.
# {1, epoch}: finished now; {0, owner}: it was finished already (a retry: nothing written, nothing counted);
# {-1, owner}: a newer owner holds it; {-2, owner}: gone.
FINISH_RECORD = FINISHED_LUA + """
local owner = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and owner ~= tonumber(ARGV[2]) then return {-1, owner} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {-2, owner} end
if finished(raw) then return {0, owner} end
if ARGV[2] == '' then owner = redis.call('INCR', KEYS[2]) end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('SREM', KEYS[3], ARGV[4])
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'kind', ARGV[5], 'data', ARGV[6])
end
redis.call('EXPIRE', KEYS[4], ttl)
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'kind', ARGV[7], 'data', ARGV[8])
end
for i = 13, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], tonumber(ARGV[i + 1]))
end
if ARGV[9] ~= '' then
  redis.call('LPUSH', KEYS[7], ARGV[9])
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[10]) - 1)
end
return {1, owner}
"""


# KEYS: council spec, active set, durations, stats; ARGV: role. Remove a deleted council's keys and its stats
# fields (`<kind>.<ROLE>[.<x>]`): the number of fields removed; -1: the council exists (again);
# -2: it still has unfinished deliberations (fail those first).
PURGE_COUNCIL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[2]) > 0 then return -2 end
redis.call('DEL', KEYS[2], KEYS[3])
local removed = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local _, _, role = string.find(field, '^[^.]+%.([^.]+)')
  if role == ARGV[1] then
    redis.call('HDEL', KEYS[4], field)
    removed = removed + 1
  end
end
return removed
"""


# The global cap on unfinished deliberations, run before CREATE_RECORD in the same script (so the count and
# the write stay one atomic step). Its arguments come last: KEYS[#KEYS] the set of councils, ARGV[#ARGV - 1]
# the cap (0: none), ARGV[#ARGV] the active sets' key prefix. Over the cap: -(GLOBAL_BUSY + n), n the total.
GLOBAL_BUSY = 1_000_000_001
GLOBAL_CAP = """
local total_cap = tonumber(ARGV[#ARGV - 1])
if total_cap > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  local total = 0
  for _, role in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do
    total = total + redis.call('SCARD', ARGV[#ARGV] .. role)
  end
  if total >= total_cap then return -(""" + str(GLOBAL_BUSY) + """ + total) end
end
"""
