-- Extend the caller's shard leases. KEYS: leases; ARGV[1] lease ms; ARGV[2..] tokens, one per key.
-- Returns one 1 (still ours, extended) or 0 (lost) per lease.
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
