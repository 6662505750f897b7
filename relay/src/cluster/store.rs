//! Accounts and sessions in Redis (SPEC O4): the [`Store`] of cluster mode,
//! so a user who signs up on one relay signs in on any other, and a
//! sign-out on one relay ends the session everywhere.
//!
//! Keys (all under [`PREFIX`]):
//! - `account-ids`: the last account id handed out (`INCR`; never reused);
//! - `name:{name key}` → account id: the name, unique ignoring ASCII case;
//! - `account:{id}`: a hash of `name`, `password_hash`, `color`;
//! - `session:{hex of the token's SHA-256}`: a hash of `user`, `last_used`,
//!   expiring after `--session-idle` without use (Redis deletes idle
//!   sessions itself).
//!
//! Each call that reads and writes is one Lua script, so it is atomic: two
//! relays racing to sign up "Bob" and "bob" make one account.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use shared::protocol::{User, UserId};

use super::{key, PREFIX};
use crate::store::{Account, Store, StoreError, TokenHash};

/// The longest expiry given to a session key (Redis takes milliseconds as
/// a signed 64-bit number); `--session-idle` beyond it is capped.
const MAX_EXPIRY_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

const CREATE_ACCOUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', ARGV[4] .. 'account:' .. id,
  'name', ARGV[1], 'password_hash', ARGV[2], 'color', ARGV[3])
redis.call('SET', KEYS[1], id)
return id
";

const ACCOUNT_BY_NAME: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
local f = redis.call('HMGET', ARGV[1] .. 'account:' .. id, 'name', 'password_hash', 'color')
if not f[1] then return false end
return {id, f[1], f[2], f[3]}
";

const SESSION_USER: &str = r"
local s = redis.call('HMGET', KEYS[1], 'user', 'last_used')
if not s[1] then return false end
if tonumber(s[2]) < tonumber(ARGV[1]) - tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local f = redis.call('HMGET', ARGV[4] .. 'account:' .. s[1], 'name', 'color')
if not f[1] then return false end
return {s[1], f[1], f[2]}
";

const DELETE_SESSION: &str = r"
local user = redis.call('HGET', KEYS[1], 'user')
redis.call('DEL', KEYS[1])
return user
";

/// Accounts and sessions in Redis.
#[derive(Clone)]
pub struct RedisStore {
    redis: ConnectionManager,
    session_idle: Duration,
    create_account: Script,
    account_by_name: Script,
    session_user: Script,
    delete_session: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("session_idle", &self.session_idle)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on this connection; sessions expire after `session_idle`
    /// without use.
    pub fn new(redis: ConnectionManager, session_idle: Duration) -> Self {
        RedisStore {
            redis,
            session_idle,
            create_account: Script::new(CREATE_ACCOUNT),
            account_by_name: Script::new(ACCOUNT_BY_NAME),
            session_user: Script::new(SESSION_USER),
            delete_session: Script::new(DELETE_SESSION),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }
}

fn session_key(token: &TokenHash) -> String {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(64);
    for byte in token.0 {
        let _ = write!(hex, "{byte:02x}");
    }
    key(&format!("session:{hex}"))
}

fn expiry_ms(idle_ms: u64) -> u64 {
    idle_ms.clamp(1, MAX_EXPIRY_MS)
}

fn backend(e: RedisError) -> StoreError {
    StoreError::Backend(format!("Redis: {e}"))
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        color: &str,
    ) -> Result<User, StoreError> {
        let name_key = key(&format!("name:{}", crate::auth::name_key(name)));
        let id: u64 = self
            .create_account
            .key(name_key)
            .key(key("account-ids"))
            .arg(name)
            .arg(password_hash)
            .arg(color)
            .arg(PREFIX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if id == 0 {
            return Err(StoreError::NameTaken);
        }
        Ok(User {
            id: UserId(id),
            name: name.to_string(),
            color: color.to_string(),
        })
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let name_key = key(&format!("name:{}", crate::auth::name_key(name)));
        let found: Option<(u64, String, String, String)> = self
            .account_by_name
            .key(name_key)
            .arg(PREFIX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(found.map(|(id, name, password_hash, color)| Account {
            user: User {
                id: UserId(id),
                name,
                color,
            },
            password_hash,
        }))
    }

    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let idle = u64::try_from(self.session_idle.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .atomic()
            .hset_multiple(
                session_key(token),
                &[("user", user.0), ("last_used", now_ms)],
            )
            .ignore()
            .pexpire(
                session_key(token),
                i64::try_from(expiry_ms(idle)).unwrap_or(i64::MAX),
            )
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn session_user(
        &self,
        token: &TokenHash,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<User>, StoreError> {
        let found: Option<(u64, String, String)> = self
            .session_user
            .key(session_key(token))
            .arg(now_ms)
            .arg(idle_ms.min(now_ms))
            .arg(expiry_ms(idle_ms))
            .arg(PREFIX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(found.map(|(id, name, color)| User {
            id: UserId(id),
            name,
            color,
        }))
    }

    async fn delete_session(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError> {
        let user: Option<u64> = self
            .delete_session
            .key(session_key(token))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(user.map(UserId))
    }

    async fn purge_expired_sessions(&self, _now_ms: u64, _idle_ms: u64) -> Result<u64, StoreError> {
        // Each session key expires by itself after `--session-idle` unused.
        Ok(0)
    }
}
