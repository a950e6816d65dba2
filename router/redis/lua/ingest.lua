-- Accept one HTTP batch of one shop: drop messages already seen, append the rest to the shard's
-- stream as one entry (k=M, n messages, b a JSON array), and count them in the shard's backlog.
-- KEYS[1] the shard's inbound stream; KEYS[2] its backlog count (messages waiting to be routed,
-- lowered by commit.lua); KEYS[3..] one dedupe key per message ("seen:{shop}:{msg_id}")
-- ARGV[1] dedupe window in seconds; ARGV[2] most messages waiting in the shard (backlog bound);
-- ARGV[3..] the messages' JSON, in the order of KEYS[3..]
-- Returns one 1 (appended) or 0 (duplicate) per message, or -1 alone when the backlog is full (nothing
-- written). Atomic: a message is seen iff it is in the stream.
if tonumber(redis.call('GET', KEYS[2]) or '0') + #KEYS - 2 > tonumber(ARGV[2]) then return {-1} end
local out, fresh = {}, {}
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    fresh[#fresh + 1] = ARGV[i]
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #fresh > 0 then
  redis.call('XADD', KEYS[1], '*', 'k', 'M', 'n', #fresh, 'b', '[' .. table.concat(fresh, ',') .. ']')
  redis.call('INCRBY', KEYS[2], #fresh)
end
return out
