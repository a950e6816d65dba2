-- Take a conversation off its agent. The claim log entry is also the announcement of the freed
-- capacity (with the agent's load across all instances after it) that every instance reads.
-- KEYS[1] the shard's lease  KEYS[2] agent hash  KEYS[3] the shard's owners hash  KEYS[4] claim log
-- KEYS[5] the agent's held set
-- ARGV[1] lease token  ARGV[2] agent id  ARGV[3] conversation id  ARGV[4] instance id  ARGV[5] reason
-- Returns 1 released, 0 not held by that agent, -2 fenced.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end
if redis.call('HGET', KEYS[3], ARGV[3]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('SREM', KEYS[5], ARGV[3])
local load = redis.call('HINCRBY', KEYS[2], 'load', -1)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000000, '*', 'op', 'release', 'agent', ARGV[2], 'conv', ARGV[3], 'load', load,
           'by', ARGV[4], 'reason', ARGV[5])
return 1
