-- Accept one HTTP batch of one shop: drop messages already seen, append the rest to the shard's stream.
-- KEYS[1] the shard's inbound stream; KEYS[2..] one dedupe key per message ("seen:{shop}:{msg_id}")
-- ARGV[1] dedupe window in seconds; ARGV[2] most entries waiting in the stream (backlog bound);
-- ARGV[3..] the messages' JSON, in the order of KEYS[2..]
-- Returns one 1 (appended) or 0 (duplicate) per message, or -1 alone when the backlog is full (nothing
-- written). Atomic: a message is seen iff it is in the stream.
if redis.call('XLEN', KEYS[1]) + #KEYS - 1 > tonumber(ARGV[2]) then return {-1} end
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'k', 'm', 'b', ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
