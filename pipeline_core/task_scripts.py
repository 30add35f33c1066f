"""The Lua of a task's state (pipeline_core/task_state.py): STATUS reads it, CANCEL
reads it and cancels in the same step. Both derive the state in FACTS, the one place it
is derived, so the state a cancel acts on is the state GET /tasks/<id> shows."""

# The state, derived in one place. KEYS: stream, dead-letter stream, the task's results
# hash, cancel requests, delayed set, delayed tasks, cancelled delayed tasks. ARGV:
# group, task ID. Returns {name, value, ...}, or nil for a task Redis knows nothing of.
FACTS = """
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am > #bm end
  if am ~= bm then return am > bm end
  if #as ~= #bs then return #as > #bs end
  return as > bs
end
local function last_delivered(stream, group)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) ~= 'table' or groups.err then return nil end
  for _, row in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #row, 2 do
      if row[i] == 'name' then name = row[i + 1] end
      if row[i] == 'last-delivered-id' then last = row[i + 1] end
    end
    if name == group then return last end
  end
  return nil
end
local function waiting(f, id)
  local due = redis.call('ZSCORE', KEYS[5], id)
  if not due then return false end
  local ok, fields = pcall(cjson.decode, redis.call('HGET', KEYS[6], id) or '[]')
  local attempt = 0
  if ok then
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 'task' or name == 'owner' then f[name] = fields[i + 1] end
      if name == 'attempt' then attempt = tonumber(fields[i + 1]) or 0 end
    end
  end
  f.due_ms = due
  f.attempts = tostring(attempt)
  if attempt > 0 then f.state = 'retrying' else f.state = 'delayed' end
  return true
end
local function facts(group, id)
  local f = {}
  local rec = redis.call('HMGET', KEYS[3], id, id .. ':owner', id .. ':state',
                         id .. ':dead', id .. ':failed', id .. ':entry')
  local entry_id = rec[6] or id
  f.id = id
  f.entry_id = entry_id
  if rec[2] then f.owner = rec[2] end
  local ok, failed = pcall(cjson.decode, rec[5] or '')
  if ok and type(failed) == 'table' then
    f.error = failed.error; f.attempts = tostring(failed.deliveries)
  end
  local entry = redis.call('XRANGE', KEYS[1], entry_id, entry_id)[1]
  if entry then
    for i = 1, #entry[2], 2 do
      local name = entry[2][i]
      if name == 'task' or name == 'owner' then f[name] = entry[2][i + 1] end
    end
  end
  if rec[1] then f.state = 'succeeded'; f.result = rec[1]; return f end
  if rec[3] == 'cancelled' or rec[3] == 'expired' then f.state = rec[3]; return f end
  if redis.call('ZSCORE', KEYS[4], id) or redis.call('ZSCORE', KEYS[7], id) then
    f.state = 'cancelled'; return f
  end
  if rec[4] then
    f.state = 'dead'; f.dead_id = rec[4]
    local dead = redis.call('XRANGE', KEYS[2], rec[4], rec[4])[1]
    if dead then
      for i = 1, #dead[2], 2 do
        local name = dead[2][i]
        if name == 'task' or name == 'owner' or name == 'error'
           or name == 'deliveries' or name == 'consumer' then
          f[name] = dead[2][i + 1]
        end
        if name == 'deliveries' then f.attempts = dead[2][i + 1] end
      end
    end
    return f
  end
  if waiting(f, id) then return f end
  local pending = redis.pcall('XPENDING', KEYS[1], group, entry_id, entry_id, 1)
  if type(pending) == 'table' and not pending.err and pending[1] then
    local row = pending[1]
    f.consumer = row[2]; f.idle_ms = tostring(row[3]); f.deliveries = tostring(row[4])
    f.state = 'running'
    return f
  end
  if not entry then return nil end
  local last = last_delivered(KEYS[1], group)
  if last == nil or newer(entry_id, last) then f.state = 'queued'; return f end
  f.state = 'succeeded'; f.result_missing = '1'  -- acknowledged, its result gone
  return f
end
local function flat(f)
  local now = redis.call('TIME')
  f.now_ms = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  local out = {}
  for name, value in pairs(f) do out[#out + 1] = name; out[#out + 1] = value end
  return out
end
"""

STATUS = (
    FACTS
    + """
local f = facts(ARGV[1], ARGV[2])
if not f then return nil end
return flat(f)
"""
)

# KEYS and ARGV as FACTS, plus ARGV[3]: how long a cancel request is kept (ms), and
# ARGV[4]: RESULT_TTL_S. A task waiting in the delayed set is taken out right there
# and noted in {tasks}:cancelled (task ID -> when, kept as long as cancel requests;
# results hashes stay the consumers' to write, so its owner is not kept); one on the
# stream gets a request in {tasks}:cancels that its consumer answers. Returns the facts
# after, `cancelled` = "1" if this call did it.
CANCEL = (
    FACTS
    + """
local f = facts(ARGV[1], ARGV[2])
if not f then return nil end
local id = ARGV[2]
-- A note of the cancel in `key` (task ID -> when), kept ARGV[3] ms.
local function note(key)
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', key, now_ms, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - tonumber(ARGV[3]))
  redis.call('PEXPIRE', key, ARGV[3])
  f.state = 'cancelled'; f.cancelled = '1'
end
if f.state == 'delayed' or f.state == 'retrying' then
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  note(KEYS[7])
elseif f.state == 'queued' then
  note(KEYS[4])
end
return flat(f)
"""
)
