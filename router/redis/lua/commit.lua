-- Commit one routed batch atomically, only while the caller still owns every shard it routed for:
-- acknowledge and delete the inbound entries, write the conversation mirror, append the decisions
-- and the agents' frames. Either all of it happens or none.
-- KEYS: every key named by index in ARGV[1]
-- ARGV[1] JSON {fence: [[key, token]], ack: [[stream, group, [ids]]], set: [[hash, field, value]],
--               del: [[hash, field]], add: [[stream, maxlen, payload, ttl_ms or 0]]}
-- Returns 1 committed, 0 fenced (nothing written).
local p = cjson.decode(ARGV[1])
for _, f in ipairs(p.fence) do
  if redis.call('GET', KEYS[f[1]]) ~= f[2] then return 0 end
end
for _, a in ipairs(p.ack) do
  local ids = a[3]
  for i = 1, #ids, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end
    redis.call('XACK', KEYS[a[1]], a[2], unpack(chunk))
    redis.call('XDEL', KEYS[a[1]], unpack(chunk))
  end
end
for _, s in ipairs(p.set) do redis.call('HSET', KEYS[s[1]], s[2], s[3]) end
for _, d in ipairs(p.del) do redis.call('HDEL', KEYS[d[1]], d[2]) end
for _, x in ipairs(p.add) do
  if x[2] > 0 then
    redis.call('XADD', KEYS[x[1]], 'MAXLEN', '~', x[2], '*', 'd', x[3])
  else
    redis.call('XADD', KEYS[x[1]], '*', 'd', x[3])
  end
  if x[4] > 0 then redis.call('PEXPIRE', KEYS[x[1]], x[4]) end
end
return 1
