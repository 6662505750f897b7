//! The sign-in throttle of cluster mode (SPEC S3): failures counted in
//! Redis, so spreading guesses over relays gains nothing. Same rules as
//! [`crate::auth::Throttle`]: per name and per address (IPv6 per /64), a
//! window that opens at the first failure, and a success that forgets the
//! name's failures but not the address's.
//!
//! Keys: `fail:name:{name key}` and `fail:addr:{address}`, each a count
//! that expires when its window closes.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use super::key;
use crate::auth::{addr_key, throttle_key};

/// Counts a failure; opens the window on the first.
const FAIL: &str = r"
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return 0
";

/// The wait in ms (0: none): the longer of the name's and the address's.
const WAIT: &str = r"
local wait = 0
for i = 1, 2 do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[i]) then
    local left = redis.call('PTTL', KEYS[i])
    if left > wait then wait = left end
  end
end
return wait
";

/// Failed sign-ins, counted in Redis for every relay.
#[derive(Clone)]
pub struct SharedThrottle {
    redis: ConnectionManager,
    per_name: u32,
    per_addr: u32,
    window: Duration,
    fail: Script,
    wait: Script,
}

impl std::fmt::Debug for SharedThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedThrottle")
            .field("per_name", &self.per_name)
            .field("per_addr", &self.per_addr)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl SharedThrottle {
    /// `per_name` failures per name and `per_addr` per address within
    /// `window` (limits below 1 count as 1).
    pub fn new(redis: ConnectionManager, per_name: u32, per_addr: u32, window: Duration) -> Self {
        SharedThrottle {
            redis,
            per_name: per_name.max(1),
            per_addr: per_addr.max(1),
            window,
            fail: Script::new(FAIL),
            wait: Script::new(WAIT),
        }
    }

    fn keys(name_key: &str, addr: IpAddr) -> [String; 2] {
        [
            key(&format!("fail:name:{}", throttle_key(name_key))),
            key(&format!("fail:addr:{}", addr_key(addr))),
        ]
    }

    /// Ok, or how long to wait.
    pub async fn check(
        &self,
        name_key: &str,
        addr: IpAddr,
    ) -> Result<Result<(), Duration>, RedisError> {
        let [name, addr] = Self::keys(name_key, addr);
        let wait: u64 = self
            .wait
            .key(name)
            .key(addr)
            .arg(self.per_name)
            .arg(self.per_addr)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match wait {
            0 => Ok(()),
            ms => Err(Duration::from_millis(ms)),
        })
    }

    /// Counts a failed sign-in against the name and the address.
    pub async fn record_failure(&self, name_key: &str, addr: IpAddr) -> Result<(), RedisError> {
        let [name, addr] = Self::keys(name_key, addr);
        let window = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.fail
            .key(name)
            .key(addr)
            .arg(window)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// A successful sign-in: forgets the name's failures.
    pub async fn record_success(&self, name_key: &str, addr: IpAddr) -> Result<(), RedisError> {
        let [name, _] = Self::keys(name_key, addr);
        redis::cmd("DEL")
            .arg(name)
            .query_async(&mut self.redis.clone())
            .await
    }
}
