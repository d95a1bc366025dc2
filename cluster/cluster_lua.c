/*
 * cluster_lua.c - the Lua scripts the cluster runs in Redis, as C string
 * constants, and their SHA1 digests for EVALSHA.  Every decision that
 * involves more than one node is one of these scripts, so it is atomic
 * (Redis runs a script alone) and uses one clock, Redis' own (TIME):
 * a node's clock never decides when a lease expires or a token is due.
 *
 * Module data: cluster_lua[], cluster_lua_name[]; function:
 * cluster_lua_sha().  tests/cluster/test_cluster_lua.c runs the same
 * text against a throwaway redis-server.
 *
 * Keys (P is cluster_name, D a destination key, N a node name):
 * P:lease:D   sorted set: lease name (N#start#seq) scored by its expiry
 *             (ms, Redis time); at most max_connections unexpired
 * P:rate:D    the GCRA's theoretical arrival time (us, Redis time)
 * P:down:D    "DSN REASON" while D is down (expires with hoststatus)
 * P:wait:D    set for 1.5 s when a node was refused a lease for D
 * P:dinfo:D   hash: conn_limit, rate, granted (for `relayq cluster`)
 * P:dests     sorted set: destinations used lately (score: until, ms)
 * P:nodes     sorted set: nodes by their last heartbeat (ms)
 * P:node:N    hash: the node's heartbeat and queue counts
 */
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "cluster_int.h"

/* The milliseconds and microseconds of Redis' clock, in every script. */
#define LUA_NOW \
	"local t = redis.call('TIME')\n" \
	"local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
	"local now = math.floor(now_us / 1000)\n"

/*
 * Leases one lease set: renews each member already there, adds each
 * other one while fewer than LIMIT unexpired members are there, and
 * answers 1 (held) or 0 (refused) per member, in order.
 */
#define LUA_CLAIM \
	"local function claim(key, limit, lease_ms, first, last)\n" \
	"  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)\n" \
	"  local n = redis.call('ZCARD', key)\n" \
	"  local out = {}\n" \
	"  for i = first, last do\n" \
	"    local m = ARGV[i]\n" \
	"    if redis.call('ZSCORE', key, m) then\n" \
	"      redis.call('ZADD', key, now + lease_ms, m)\n" \
	"      out[#out + 1] = 1\n" \
	"    elseif n < limit then\n" \
	"      redis.call('ZADD', key, now + lease_ms, m)\n" \
	"      n = n + 1\n" \
	"      out[#out + 1] = 1\n" \
	"    else\n" \
	"      out[#out + 1] = 0\n" \
	"    end\n" \
	"  end\n" \
	"  if n > 0 then redis.call('PEXPIRE', key, lease_ms) end\n" \
	"  return out\n" \
	"end\n"

const char *const cluster_lua[CS_NSCRIPT] = {
	/*
	 * acquire: KEYS lease set, down key, P:dests, dinfo hash, wait
	 * key; ARGV lease_ms, limit, check_down (1/0), destination, lease
	 * names...  Returns {0, "DSN REASON", pttl} when the destination is
	 * down (checked first, when asked), else {1, held-or-not per
	 * name}.  A refusal sets the wait key for 1.5 s: the holders
	 * learn from their tick that another node waits.
	 */
	[CS_ACQUIRE] = LUA_NOW LUA_CLAIM
	"local lease_ms = tonumber(ARGV[1])\n"
	"local limit = tonumber(ARGV[2])\n"
	"if ARGV[3] == '1' then\n"
	"  local down = redis.call('GET', KEYS[2])\n"
	"  if down then\n"
	"    return {0, down, redis.call('PTTL', KEYS[2])}\n"
	"  end\n"
	"end\n"
	"local out = claim(KEYS[1], limit, lease_ms, 5, #ARGV)\n"
	"for i = 1, #out do\n"
	"  if out[i] == 0 then\n"
	"    redis.call('SET', KEYS[5], '1', 'PX', 1500)\n"
	"    break\n"
	"  end\n"
	"end\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
	"redis.call('ZADD', KEYS[3], now + 600000, ARGV[4])\n"
	"redis.call('HSET', KEYS[4], 'conn_limit', limit)\n"
	"redis.call('PEXPIRE', KEYS[4], 600000)\n"
	"table.insert(out, 1, 1)\n"
	"return out\n",

	/*
	 * tick: KEYS P:nodes, P:node:N, then a lease set, its wait key
	 * and its down key per destination; ARGV node, lease_ms, live_ms,
	 * nfields, field, value... (the heartbeat's hash), then per lease
	 * set: limit, count, names.  Records the heartbeat, forgets nodes
	 * silent for lease_ms, renews the node's leases (a lost one comes
	 * back while there is room) and returns {live nodes, then per
	 * destination {names lost}, whether another node waits (1/0), the
	 * down text ("" when not down) and its pttl}: a node that holds
	 * leases learns within a tick that another found the host down.
	 */
	[CS_TICK] = LUA_NOW LUA_CLAIM
	"local lease_ms = tonumber(ARGV[2])\n"
	"local live_ms = tonumber(ARGV[3])\n"
	"redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease_ms)\n"
	"redis.call('PEXPIRE', KEYS[1], lease_ms)\n"
	"local i = 5\n"
	"redis.call('HSET', KEYS[2], 'seen', now)\n"
	"for j = 1, tonumber(ARGV[4]) do\n"
	"  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])\n"
	"  i = i + 2\n"
	"end\n"
	"redis.call('PEXPIRE', KEYS[2], lease_ms)\n"
	"local out = {redis.call('ZCOUNT', KEYS[1], now - live_ms, '+inf')}\n"
	"for k = 3, #KEYS, 3 do\n"
	"  local limit = tonumber(ARGV[i])\n"
	"  local cnt = tonumber(ARGV[i + 1])\n"
	"  local got = claim(KEYS[k], limit, lease_ms, i + 2, i + 1 + cnt)\n"
	"  local lost = {}\n"
	"  for j = 1, cnt do\n"
	"    if got[j] == 0 then lost[#lost + 1] = ARGV[i + 1 + j] end\n"
	"  end\n"
	"  out[#out + 1] = lost\n"
	"  out[#out + 1] = redis.call('EXISTS', KEYS[k + 1])\n"
	"  local down = redis.call('GET', KEYS[k + 2])\n"
	"  if down then\n"
	"    out[#out + 1] = down\n"
	"    out[#out + 1] = redis.call('PTTL', KEYS[k + 2])\n"
	"  else\n"
	"    out[#out + 1] = ''\n"
	"    out[#out + 1] = 0\n"
	"  end\n"
	"  i = i + 2 + cnt\n"
	"end\n"
	"return out\n",

	/*
	 * rate: KEYS rate key, P:dests, dinfo hash; ARGV T (us between
	 * tokens), tau (us: (burst - 1) * T), want, horizon (us),
	 * destination, the rate as written.  The GCRA as virtual
	 * scheduling: token k is due at max(now, tat - tau) and moves tat
	 * on by T.  Reserves up to WANT tokens due within HORIZON and
	 * returns {count, due of the first (us from now; <= 0: now), due of
	 * the next one not reserved (us from now)}: token j of the batch is
	 * due at max(0, first + j * T).
	 */
	[CS_RATE] = LUA_NOW
	"local T = tonumber(ARGV[1])\n"
	"local tau = tonumber(ARGV[2])\n"
	"local want = tonumber(ARGV[3])\n"
	"local horizon = tonumber(ARGV[4])\n"
	"local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
	"if tat < now_us then tat = now_us end\n"
	"local first = tat - tau - now_us\n"
	"local n = 0\n"
	"while n < want and tat - tau - now_us <= horizon do\n"
	"  n = n + 1\n"
	"  tat = tat + T\n"
	"end\n"
	"if n > 0 then\n"
	"  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
	"    math.floor((tat - now_us) / 1000) + 1000)\n"
	"  redis.call('HINCRBY', KEYS[3], 'granted', n)\n"
	"end\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
	"redis.call('ZADD', KEYS[2], now + 600000, ARGV[5])\n"
	"redis.call('HSET', KEYS[3], 'rate', ARGV[6])\n"
	"redis.call('PEXPIRE', KEYS[3], 600000)\n"
	"return {n, first, tat - tau - now_us}\n",

	/*
	 * view (read only, for `relayq cluster`): KEYS P:nodes, P:dests;
	 * ARGV prefix P.  Returns {now (ms), {node, last seen (ms),
	 * {field, value...}}..., {destination, {lease names}, {field,
	 * value...} of dinfo, down text or "", its pttl, tokens reserved
	 * ahead (us)}...}.
	 */
	[CS_VIEW] = LUA_NOW
	"local p = ARGV[1]\n"
	"local nodes = {}\n"
	"local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')\n"
	"for i = 1, #z, 2 do\n"
	"  nodes[#nodes + 1] = {z[i], z[i + 1],\n"
	"    redis.call('HGETALL', p .. ':node:' .. z[i])}\n"
	"end\n"
	"local dests = {}\n"
	"for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now,\n"
	"    '+inf')) do\n"
	"  local leases = redis.call('ZRANGEBYSCORE', p .. ':lease:' .. d,\n"
	"    '(' .. now, '+inf')\n"
	"  local down = redis.call('GET', p .. ':down:' .. d) or ''\n"
	"  local tat = tonumber(redis.call('GET', p .. ':rate:' .. d)\n"
	"    or '0')\n"
	"  local ahead = 0\n"
	"  if tat > now_us then ahead = tat - now_us end\n"
	"  dests[#dests + 1] = {d, leases,\n"
	"    redis.call('HGETALL', p .. ':dinfo:' .. d), down,\n"
	"    redis.call('PTTL', p .. ':down:' .. d), ahead}\n"
	"end\n"
	"return {now, nodes, dests}\n",
};

const char *const cluster_lua_name[CS_NSCRIPT] = {
	[CS_ACQUIRE] = "acquire",
	[CS_TICK] = "tick",
	[CS_RATE] = "rate",
	[CS_VIEW] = "view",
};

/* Writes the SHA1 of script S, as EVALSHA wants it (40 hex digits and a
 * NUL), into OUT. */
void
cluster_lua_sha(enum cluster_script s, char out[41])
{
	unsigned char md[SHA_DIGEST_LENGTH];

	SHA1((const unsigned char *)cluster_lua[s], strlen(cluster_lua[s]), md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}
