//! The Lua scripts of the fleet queue. Each runs atomically in Redis; every
//! write a worker makes while running a job checks first that it still
//! holds the job's lease (fencing), so a worker that lost its lease (paused,
//! partitioned) can never write over the attempt that replaced it.
//!
//! Key layout (see docs/queue.md): `rlm:jobs` (stream of job ids, consumer
//! group `rlm-workers`), `rlm:queued` (sorted set of queued ids by
//! submission time), `rlm:job:<id>` (hash), `rlm:job:<id>:events` (stream of
//! events, entry id `<sequence>-0`), `rlm:job:<id>:lease` (the lease token),
//! `rlm:idem:<key>` (idempotency key -> id). Scripts read the idempotency
//! key's name from the job hash, so a standalone Redis is required (not
//! Redis Cluster).

/// KEYS: queued, job, jobs stream. ARGV: id, spec, now_ms, max_queued,
/// idempotency key name or "".
/// Returns {"duplicate", id} | {"full", ""} | {"queued", id}.
pub const SUBMIT: &str = r"
if ARGV[5] ~= '' then
  local existing = redis.call('GET', ARGV[5])
  if existing then return {'duplicate', existing} end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {'full', ''} end
redis.call('HSET', KEYS[2], 'state', 'QUEUED', 'spec', ARGV[2], 'submitted_ms', ARGV[3],
  'attempts', 0, 'handbacks', 0, 'events', 0, 'idem', ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local entry = redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
redis.call('HSET', KEYS[2], 'entry', entry)
if ARGV[5] ~= '' then redis.call('SET', ARGV[5], ARGV[1]) end
return {'queued', ARGV[1]}
";

/// Takes the lease of a job and starts an attempt.
/// KEYS: job, lease, queued. ARGV: id, token, lease_ms, max_attempts, worker.
/// Returns {outcome, attempts, events so far, cancel reason} where outcome
/// is gone | done | busy | cancelled | exhausted | run.
pub const BEGIN: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'gone', 0, 0, ''} end
if state ~= 'QUEUED' and state ~= 'RUNNING' then return {'done', 0, 0, ''} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'busy', 0, 0, ''} end
redis.call('ZREM', KEYS[3], ARGV[1])
local events = tonumber(redis.call('HGET', KEYS[1], 'events') or '0')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local handbacks = tonumber(redis.call('HGET', KEYS[1], 'handbacks') or '0')
local cancel = redis.call('HGET', KEYS[1], 'cancel')
if cancel then return {'cancelled', attempts, events, cancel} end
if attempts - handbacks >= tonumber(ARGV[4]) then return {'exhausted', attempts, events, ''} end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'worker', ARGV[5])
return {'run', attempts, events, ''}
";

/// Renews the lease and the job's stream entry (so no other worker claims
/// it). KEYS: lease, job, jobs stream. ARGV: token, lease_ms, group,
/// consumer, entry. Returns {"ok"|"cancel"|"lost", cancel reason}.
pub const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost', ''} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XCLAIM', KEYS[3], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID')
local cancel = redis.call('HGET', KEYS[2], 'cancel')
if cancel then return {'cancel', cancel} end
return {'ok', ''}
";

/// Appends one event while holding the lease. KEYS: job, lease, events.
/// ARGV: token, sequence, event, usage, partial answer, max kept events.
/// Returns 1, or 0 when the lease is lost.
pub const APPEND: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], ARGV[2] .. '-0', 'e', ARGV[3])
redis.call('HSET', KEYS[1], 'events', ARGV[2], 'usage', ARGV[4], 'partial', ARGV[5])
return 1
";

/// Shared tail of FINISH and CANCEL_QUEUED: the result event, the final
/// state, the TTLs, and the job's entry acknowledged and deleted.
/// KEYS: job, events, jobs stream, queued. ARGV[1..9]: sequence, event,
/// state, result, usage, partial, retention_s, group, max kept events.
const END: &str = r"
local function finish()
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], ARGV[1] .. '-0', 'e', ARGV[2])
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'result', ARGV[4], 'usage', ARGV[5],
    'partial', ARGV[6], 'events', ARGV[1])
  redis.call('HDEL', KEYS[1], 'spec')
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  local idem = redis.call('HGET', KEYS[1], 'idem')
  if idem and idem ~= '' then redis.call('EXPIRE', idem, ARGV[7]) end
  local entry = redis.call('HGET', KEYS[1], 'entry')
  if entry then
    redis.call('XACK', KEYS[3], ARGV[8], entry)
    redis.call('XDEL', KEYS[3], entry)
  end
  redis.call('ZREM', KEYS[4], ARGV[10])
end
";

/// Ends a job while holding its lease. KEYS: job, events, jobs stream,
/// queued, lease. ARGV: as END, then id, token. Returns 1, or 0 when the
/// lease is lost.
pub fn finish() -> String {
    format!(
        "{END}
if redis.call('GET', KEYS[5]) ~= ARGV[11] then return 0 end
finish()
redis.call('DEL', KEYS[5])
return 1
"
    )
}

/// Cancels a job from any replica. KEYS: as END. ARGV: as END, then id,
/// the events count the caller saw, the cancel reason. Returns gone |
/// ended | running (the cancel is left for its worker) | retry (the job
/// changed meanwhile) | cancelled.
pub fn cancel() -> String {
    format!(
        "{END}
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'cancel', ARGV[12])
  return 'running'
end
if state ~= 'QUEUED' then return 'ended' end
if redis.call('HGET', KEYS[1], 'events') ~= ARGV[11] then return 'retry' end
finish()
return 'cancelled'
"
    )
}

/// Gives a running job back (graceful shutdown): the lease goes, the job is
/// queued again and another worker claims its entry once it is idle for a
/// lease. KEYS: lease, job, queued. ARGV: token, id. Returns 1 or 0.
pub const HAND_BACK: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'handbacks', 1)
redis.call('HSET', KEYS[2], 'state', 'QUEUED')
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[2], 'submitted_ms'), ARGV[2])
return 1
";
