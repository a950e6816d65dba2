-- Take a free shard lease. The token starts with the shard's epoch, raised in the same step, so
-- every later owner of a shard holds a higher epoch than every earlier one: what PostgreSQL
-- compares to refuse the history rows of an owner that lost the shard without knowing it
-- (router/storage/pg/records.py, write_history).
-- KEYS[1] lease, KEYS[2] epoch; ARGV[1] instance token, ARGV[2] lease ms.
-- Returns the token, or false when the lease is held.
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
