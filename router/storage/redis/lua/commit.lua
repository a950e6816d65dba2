-- Commit one routed batch atomically, only while the caller still owns every shard it routed for:
-- acknowledge and delete the inbound entries, lower the shards' backlog counts, write the
-- conversation mirror, append the decisions and the agents' frames. Either all of it happens or none.
-- The caller groups the writes per key (one HSET per hash, one XADD per stream), so the cost is per
-- shard and per agent touched, not per message.
-- KEYS: every key named by index in ARGV[1]
-- ARGV[1] JSON {fence: [[key, token]], ack: [[stream, group, [ids], messages]], backlog: [[key, n]],
--               set: [[hash, [field, value, ...]]], del: [[hash, [field, ...]]],
--               add: [[stream, maxlen, payload, ttl_ms or 0]]}
-- Returns 1 committed, 0 fenced (nothing written).
local p = cjson.decode(ARGV[1])
if #p.fence > 0 then
  local names = {}
  for i, f in ipairs(p.fence) do names[i] = KEYS[f[1]] end
  local held = redis.call('MGET', unpack(names))
  for i, f in ipairs(p.fence) do
    if held[i] ~= f[2] then return 0 end
  end
end
local function chunks(key, cmd, prefix, items)
  for i = 1, #items, 500 do
    local args = {}
    for _, a in ipairs(prefix) do args[#args + 1] = a end
    for j = i, math.min(i + 499, #items) do args[#args + 1] = items[j] end
    redis.call(cmd, key, unpack(args))
  end
end
for _, a in ipairs(p.ack) do
  chunks(KEYS[a[1]], 'XACK', {a[2]}, a[3])
  chunks(KEYS[a[1]], 'XDEL', {}, a[3])
end
for _, b in ipairs(p.backlog) do redis.call('DECRBY', KEYS[b[1]], b[2]) end
for _, s in ipairs(p.set) do chunks(KEYS[s[1]], 'HSET', {}, s[2]) end
for _, d in ipairs(p.del) do chunks(KEYS[d[1]], 'HDEL', {}, d[2]) end
for _, x in ipairs(p.add) do
  if x[2] > 0 then
    redis.call('XADD', KEYS[x[1]], 'MAXLEN', '~', x[2], '*', 'd', x[3])
  else
    redis.call('XADD', KEYS[x[1]], '*', 'd', x[3])
  end
  if x[4] > 0 then redis.call('PEXPIRE', KEYS[x[1]], x[4]) end
end
return 1
