-- Accept one HTTP batch of one shop: drop messages already seen, append the rest to the shard's
-- stream as one entry (k=M, n messages, b a JSON array), and count them in the shard's backlog.
-- The shop's dedupe set is one sorted set (msg_id scored by the end of its dedupe window), so a
-- batch costs a few commands whatever its size; ids whose window ended are trimmed here.
-- KEYS[1] the shard's inbound stream; KEYS[2] its backlog count (messages waiting to be routed,
-- lowered by commit.lua); KEYS[3] the shop's dedupe set; KEYS[4..] one "seen:{shop}:{msg_id}" key
-- per message (where an older version kept them; read only)
-- ARGV[1] dedupe window in seconds; ARGV[2] most messages waiting in the shard (backlog bound);
-- ARGV[3] now (Unix seconds); ARGV[4] m, the number of messages; ARGV[5..4+m] their msg_ids;
-- ARGV[5+m..4+2m] their JSON
-- Returns one 1 (appended) or 0 (duplicate) per message, or -1 alone when the backlog is full (nothing
-- written). Atomic: a message is seen iff it is in the stream.
-- (ZMSCORE, MGET and ZADD take at most 1,000 arguments at a time: unpack has a stack limit)
local m = tonumber(ARGV[4])
if tonumber(redis.call('GET', KEYS[2]) or '0') + m > tonumber(ARGV[2]) then return {-1} end
local now = tonumber(ARGV[3])
local until_ = now + tonumber(ARGV[1])
local scores, legacy = {}, {}
for i = 1, m, 1000 do
  local j = math.min(i + 999, m)
  local s = redis.call('ZMSCORE', KEYS[3], unpack(ARGV, 4 + i, 4 + j))
  local l = redis.call('MGET', unpack(KEYS, 3 + i, 3 + j))
  for k = 1, j - i + 1 do
    scores[i + k - 1] = s[k]
    legacy[i + k - 1] = l[k]
  end
end
local out, fresh, add, here = {}, {}, {}, {}
for i = 1, m do
  local id = ARGV[4 + i]
  if (scores[i] and tonumber(scores[i]) > now) or legacy[i] or here[id] then
    out[i] = 0
  else
    out[i] = 1
    here[id] = true
    fresh[#fresh + 1] = ARGV[4 + m + i]
    add[#add + 1] = until_
    add[#add + 1] = id
  end
end
if #fresh > 0 then
  for i = 1, #add, 1000 do redis.call('ZADD', KEYS[3], unpack(add, i, math.min(i + 999, #add))) end
  redis.call('XADD', KEYS[1], '*', 'k', 'M', 'n', #fresh, 'b', '[' .. table.concat(fresh, ',') .. ']')
  redis.call('INCRBY', KEYS[2], #fresh)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
return out
