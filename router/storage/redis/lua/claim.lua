-- Give a conversation to an agent if, on authoritative values, the agent is online and below its cap
-- and the conversation is held by no other agent. The claim log entry is also the announcement every
-- instance reads: the agent's assignments, its load across all instances (least_load, availability)
-- and, as the entry's id, its place in the global claim order (round robin).
-- KEYS[1] the shard's lease  KEYS[2] agent hash (status, load, assigned, seq)  KEYS[3] the shard's owners hash
-- KEYS[4] claim log stream   KEYS[5] the agent's held set
-- ARGV[1] lease token  ARGV[2] agent id  ARGV[3] conversation id  ARGV[4] cap  ARGV[5] instance id
-- Returns 1 claimed (or already this agent's), 0 agent full or not online, -1 held by another agent,
-- -2 the caller no longer owns the shard (fenced).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end
local cur = redis.call('HGET', KEYS[3], ARGV[3])
if cur then
  if cur == ARGV[2] then return 1 end
  return -1
end
local a = redis.call('HMGET', KEYS[2], 'status', 'load', 'assigned')
if a[1] ~= 'online' then return 0 end
local load = tonumber(a[2] or '0')
if load >= tonumber(ARGV[4]) then return 0 end
local assigned = tonumber(a[3] or '0') + 1
local seq = redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000000, '*', 'op', 'claim', 'agent', ARGV[2], 'conv', ARGV[3],
                       'load', load + 1, 'cap', ARGV[4], 'by', ARGV[5], 'assigned', assigned)
redis.call('HSET', KEYS[2], 'load', load + 1, 'seq', seq, 'assigned', assigned)
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[3])
return 1
