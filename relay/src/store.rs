//! Accounts and sessions (SPEC S2, S4, O3): what must survive a relay
//! restart. Live state (presence, conversations) is not here.
//!
//! [`Store`] is the interface the HTTP API and the WebSocket upgrade use; the
//! embedded default is [`SqliteStore`], one SQLite file (`--db`). Cluster
//! mode will add a Redis store behind the same trait.
//!
//! The store holds no secrets in clear: passwords arrive as argon2id PHC
//! strings and session tokens as their SHA-256 ([`TokenHash`]), both made in
//! [`crate::auth`]. Names are unique ignoring ASCII case through a `name_key`
//! column with a UNIQUE index, so the database itself settles two sign-ups
//! racing for "Bob" and "bob".

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use shared::protocol::{User, UserId};

/// SHA-256 of a session token: the store never sees the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// Why a store call failed.
#[derive(Debug)]
pub enum StoreError {
    /// Another account has this name, ignoring ASCII case.
    NameTaken,
    /// The database failed: the sentence says how.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NameTaken => f.write_str("that name is taken"),
            StoreError::Backend(why) => write!(f, "store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// An account as the store keeps it.
#[derive(Debug, Clone)]
pub struct Account {
    /// What every page knows of the user.
    pub user: User,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
}

/// Accounts and sessions. Times are Unix milliseconds, passed in by the
/// caller, so expiry is tested without clocks.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Creates an account. Names are unique ignoring ASCII case:
    /// [`StoreError::NameTaken`] otherwise. The name is kept as typed.
    async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        color: &str,
    ) -> Result<User, StoreError>;

    /// Finds an account by name, ignoring ASCII case.
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;

    /// Records a new session for `user`, last used at `now_ms` (Unix ms).
    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The user of a live session: one used within `idle_ms` before
    /// `now_ms`. Refreshes its last use to `now_ms`. An expired session is
    /// deleted and gives None.
    async fn session_user(
        &self,
        token: &TokenHash,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<User>, StoreError>;

    /// Deletes a session; returns its user if it existed.
    async fn delete_session(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError>;

    /// Deletes every session idle for more than `idle_ms`; returns how many.
    async fn purge_expired_sessions(&self, now_ms: u64, idle_ms: u64) -> Result<u64, StoreError>;
}

/// How long a call waits for another process's write lock on the file
/// before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one step per version (`PRAGMA user_version` counts the steps
/// applied). Append only: a released step never changes.
const MIGRATIONS: &[&str] = &[
    // 1: accounts and sessions. AUTOINCREMENT so that an id is never reused,
    // even if accounts are one day deleted.
    "CREATE TABLE accounts (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         name          TEXT NOT NULL,
         name_key      TEXT NOT NULL,
         password_hash TEXT NOT NULL,
         color         TEXT NOT NULL
     );
     CREATE UNIQUE INDEX accounts_by_name_key ON accounts (name_key);
     CREATE TABLE sessions (
         token_hash   BLOB PRIMARY KEY,
         user_id      INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         last_used_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sessions_by_last_use ON sessions (last_used_ms);
     CREATE INDEX sessions_by_user ON sessions (user_id);",
];

/// The embedded store: one SQLite file (SPEC O3).
///
/// rusqlite is blocking, so the connection lives on a thread of its own,
/// which runs the calls one at a time in the order they came. One thread
/// rather than tokio's blocking pool: a burst of reconnects would otherwise
/// start dozens of pool threads to wait on one connection, and SQLite's
/// page cache, allocated by whichever of them ran, kept their allocator
/// pages alive after they exited (docs/RELIABILITY.md, the soak).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
}

/// How long the store's thread waits for a call before it runs
/// [`crate::metrics::ON_THREAD_IDLE`].
const IDLE_TICK: Duration = Duration::from_secs(1);

/// One call, run on the store's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

impl SqliteStore {
    /// Opens the file at `path`, creating it if needed, and brings its
    /// schema up to date. Write-ahead logging lets readers and the writer
    /// proceed together; `synchronous=NORMAL` may lose the last commits on
    /// power loss but never corrupts the file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let context =
            |e: rusqlite::Error| StoreError::Backend(format!("database {}: {e}", path.display()));
        let conn = Connection::open(path).map_err(context)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(context)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(context)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                mode,
                "the database is not in write-ahead-log mode"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(context)?;
        Self::prepare(conn).map_err(|e| match e {
            StoreError::Backend(why) => {
                StoreError::Backend(format!("database {}: {why}", path.display()))
            }
            other => other,
        })
    }

    /// A store that lives in memory and vanishes with it: for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    /// Settings every connection needs, then the migrations.
    fn prepare(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                // Ends when the last handle to the store is dropped.
                loop {
                    let job = match queue.recv_timeout(IDLE_TICK) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Some(idle) = crate::metrics::ON_THREAD_IDLE.get() {
                                idle();
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    // A panic in a call dropped (rolled back) any open
                    // transaction, so the connection is consistent: the
                    // caller gets an error and the store carries on.
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore { jobs })
    }

    /// Runs `f` on the store's thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(f(conn));
            }))
            .map_err(|_| StoreError::Backend("the store's thread has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Backend("the store's call failed".into()))?
    }
}

/// Applies the steps of [`MIGRATIONS`] the file lacks, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let done = usize::try_from(version).unwrap_or(usize::MAX);
    if done > known {
        return Err(StoreError::Backend(format!(
            "schema version {version} is newer than this relay knows ({known}); \
             run a newer relay or another --db"
        )));
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(done) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

/// The user id in column `idx`: SQLite integers are i64, ids are positive.
fn user_id_at(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<UserId> {
    let raw: i64 = row.get(idx)?;
    u64::try_from(raw)
        .map(UserId)
        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, raw))
}

/// A Unix-ms time as SQLite stores it (i64); beyond i64 means "the far future".
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The oldest last use that is still live at `now_ms`.
fn live_since(now_ms: u64, idle_ms: u64) -> i64 {
    sql_ms(now_ms.saturating_sub(idle_ms))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        color: &str,
    ) -> Result<User, StoreError> {
        let (name, key) = (name.to_string(), crate::auth::name_key(name));
        let (password_hash, color) = (password_hash.to_string(), color.to_string());
        self.run(move |conn| {
            let inserted = conn.query_row(
                "INSERT INTO accounts (name, name_key, password_hash, color)
                 VALUES (?1, ?2, ?3, ?4) RETURNING id",
                (&name, &key, &password_hash, &color),
                |row| user_id_at(row, 0),
            );
            match inserted {
                Ok(id) => Ok(User { id, name, color }),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    Err(StoreError::NameTaken)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let key = crate::auth::name_key(name);
        self.run(move |conn| {
            let account = conn
                .query_row(
                    "SELECT id, name, color, password_hash FROM accounts WHERE name_key = ?1",
                    [&key],
                    |row| {
                        Ok(Account {
                            user: User {
                                id: user_id_at(row, 0)?,
                                name: row.get(1)?,
                                color: row.get(2)?,
                            },
                            password_hash: row.get(3)?,
                        })
                    },
                )
                .optional()?;
            Ok(account)
        })
        .await
    }

    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let token = *token;
        let user_id = i64::try_from(user.0)
            .map_err(|_| StoreError::Backend(format!("no account has the id {user}")))?;
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO sessions (token_hash, user_id, last_used_ms) VALUES (?1, ?2, ?3)",
                (&token.0[..], user_id, sql_ms(now_ms)),
            )?;
            Ok(())
        })
        .await
    }

    async fn session_user(
        &self,
        token: &TokenHash,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<User>, StoreError> {
        let token = *token;
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = tx
                .query_row(
                    "SELECT s.last_used_ms, a.id, a.name, a.color
                     FROM sessions s JOIN accounts a ON a.id = s.user_id
                     WHERE s.token_hash = ?1",
                    [&token.0[..]],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            User {
                                id: user_id_at(row, 1)?,
                                name: row.get(2)?,
                                color: row.get(3)?,
                            },
                        ))
                    },
                )
                .optional()?;
            let user = match found {
                None => None,
                Some((last_used, _)) if last_used < live_since(now_ms, idle_ms) => {
                    tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [&token.0[..]])?;
                    None
                }
                Some((_, user)) => {
                    tx.execute(
                        "UPDATE sessions SET last_used_ms = ?2 WHERE token_hash = ?1",
                        (&token.0[..], sql_ms(now_ms)),
                    )?;
                    Some(user)
                }
            };
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn delete_session(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError> {
        let token = *token;
        self.run(move |conn| {
            let user = conn
                .query_row(
                    "DELETE FROM sessions WHERE token_hash = ?1 RETURNING user_id",
                    [&token.0[..]],
                    |row| user_id_at(row, 0),
                )
                .optional()?;
            Ok(user)
        })
        .await
    }

    async fn purge_expired_sessions(&self, now_ms: u64, idle_ms: u64) -> Result<u64, StoreError> {
        self.run(move |conn| {
            let gone = conn.execute(
                "DELETE FROM sessions WHERE last_used_ms < ?1",
                [live_since(now_ms, idle_ms)],
            )?;
            Ok(u64::try_from(gone).unwrap_or(u64::MAX))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    const IDLE_MS: u64 = 7 * DAY_MS;
    const T0: u64 = 1_700_000_000_000;

    fn token(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    /// A database file under the temp folder, removed (with its WAL files)
    /// when dropped, also when a test fails.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "chat-relay-store-{tag}-{}-{n}.db",
                std::process::id()
            ));
            let db = TempDb(path);
            db.remove();
            db
        }

        fn remove(&self) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = self.0.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            self.remove();
        }
    }

    /// A call that panics is an error to its caller; the calls after it
    /// run on the same connection as before.
    #[tokio::test]
    async fn o3_a_call_that_panics_leaves_the_store_working() {
        let store = SqliteStore::in_memory().unwrap();
        let failed = store
            .run(|_| -> Result<(), StoreError> { panic!("a bug in a call") })
            .await;
        assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
        let count = store
            .run(|conn| {
                conn.query_row("SELECT count(*) FROM accounts", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(StoreError::from)
            })
            .await;
        assert_eq!(count.ok(), Some(0));
    }

    #[tokio::test]
    async fn accounts_are_found_by_name_ignoring_case() {
        let store = SqliteStore::in_memory().unwrap();
        let bob = store
            .create_account("Bob", "$hash-b", "#b91c1c")
            .await
            .unwrap();
        assert_eq!(bob.name, "Bob");
        assert_eq!(bob.color, "#b91c1c");
        let ann = store
            .create_account("ann.l", "$hash-a", "#0369a1")
            .await
            .unwrap();
        assert_ne!(ann.id, bob.id);

        for typed in ["Bob", "bob", "BOB", "bOb"] {
            let found = store.account_by_name(typed).await.unwrap().unwrap();
            assert_eq!(found.user, bob, "{typed}");
            assert_eq!(found.password_hash, "$hash-b");
        }
        assert_eq!(
            store.account_by_name("ANN.L").await.unwrap().unwrap().user,
            ann
        );
        assert!(store.account_by_name("carol").await.unwrap().is_none());
        assert!(store.account_by_name("").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_case_variant_of_a_taken_name_is_taken() {
        let store = SqliteStore::in_memory().unwrap();
        store.create_account("Bob", "$h1", "#b91c1c").await.unwrap();
        for variant in ["Bob", "bob", "BOB"] {
            let err = store
                .create_account(variant, "$h2", "#0369a1")
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::NameTaken), "{variant}: {err}");
        }
        let kept = store.account_by_name("bob").await.unwrap().unwrap();
        assert_eq!(kept.user.name, "Bob", "the first spelling stays");
        assert_eq!(
            kept.password_hash, "$h1",
            "a failed sign-up changes nothing"
        );
    }

    #[tokio::test]
    async fn racing_sign_ups_for_one_name_make_one_account() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let (a, b) = tokio::join!(
            store.create_account("Bob", "$h1", "#b91c1c"),
            store.create_account("bob", "$h2", "#0369a1"),
        );
        let (won, lost) = match (a, b) {
            (Ok(user), Err(e)) | (Err(e), Ok(user)) => (user, e),
            other => panic!("expected one account and one NameTaken: {other:?}"),
        };
        assert!(matches!(lost, StoreError::NameTaken), "{lost}");
        assert_eq!(
            store.account_by_name("BOB").await.unwrap().unwrap().user,
            won
        );
    }

    #[tokio::test]
    async fn account_ids_are_positive_and_never_reused() {
        let store = SqliteStore::in_memory().unwrap();
        let mut ids = Vec::new();
        for name in ["ann", "ben", "cat"] {
            ids.push(
                store
                    .create_account(name, "$h", "#000000")
                    .await
                    .unwrap()
                    .id,
            );
        }
        assert!(ids.iter().all(|id| id.0 > 0), "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[tokio::test]
    async fn a_live_session_gives_its_user() {
        let store = SqliteStore::in_memory().unwrap();
        let bob = store.create_account("Bob", "$h", "#b91c1c").await.unwrap();
        store.create_session(&token(1), bob.id, T0).await.unwrap();

        let user = store
            .session_user(&token(1), T0 + DAY_MS, IDLE_MS)
            .await
            .unwrap();
        assert_eq!(user, Some(bob.clone()));
        assert_eq!(
            store.session_user(&token(2), T0, IDLE_MS).await.unwrap(),
            None
        );
        // Exactly idle_ms after the last use is still live.
        let edge = store
            .session_user(&token(1), T0 + DAY_MS + IDLE_MS, IDLE_MS)
            .await;
        assert_eq!(edge.unwrap(), Some(bob));
    }

    #[tokio::test]
    async fn use_extends_a_session_and_idleness_ends_it() {
        let store = SqliteStore::in_memory().unwrap();
        let bob = store.create_account("Bob", "$h", "#b91c1c").await.unwrap();
        store.create_session(&token(1), bob.id, T0).await.unwrap();

        // Used every 6 days for 4 weeks: never idle for 7.
        let mut now = T0;
        for _ in 0..5 {
            now += 6 * DAY_MS;
            let user = store.session_user(&token(1), now, IDLE_MS).await.unwrap();
            assert_eq!(user.as_ref(), Some(&bob), "at day {}", (now - T0) / DAY_MS);
        }
        // Then 7 days and a millisecond of silence.
        now += IDLE_MS + 1;
        assert_eq!(
            store.session_user(&token(1), now, IDLE_MS).await.unwrap(),
            None
        );
        // It was deleted, not just refused: nothing to delete now.
        assert_eq!(store.delete_session(&token(1)).await.unwrap(), None);
        assert_eq!(store.purge_expired_sessions(now, 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn deleting_a_session_returns_its_user_and_ends_it() {
        let store = SqliteStore::in_memory().unwrap();
        let bob = store.create_account("Bob", "$h", "#b91c1c").await.unwrap();
        store.create_session(&token(1), bob.id, T0).await.unwrap();
        store.create_session(&token(2), bob.id, T0).await.unwrap();

        assert_eq!(store.delete_session(&token(1)).await.unwrap(), Some(bob.id));
        assert_eq!(store.delete_session(&token(1)).await.unwrap(), None);
        assert_eq!(
            store.session_user(&token(1), T0, IDLE_MS).await.unwrap(),
            None
        );
        // Bob's other browser stays signed in (SPEC S5).
        let other = store.session_user(&token(2), T0, IDLE_MS).await.unwrap();
        assert_eq!(other, Some(bob));
    }

    #[tokio::test]
    async fn sessions_need_an_account_and_a_fresh_token() {
        let store = SqliteStore::in_memory().unwrap();
        let err = store
            .create_session(&token(1), UserId(42), T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
        let err = store
            .create_session(&token(1), UserId(u64::MAX), T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");

        let bob = store.create_account("Bob", "$h", "#b91c1c").await.unwrap();
        store.create_session(&token(1), bob.id, T0).await.unwrap();
        let err = store
            .create_session(&token(1), bob.id, T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
    }

    #[tokio::test]
    async fn purge_deletes_only_idle_sessions_and_counts_them() {
        let store = SqliteStore::in_memory().unwrap();
        let bob = store.create_account("Bob", "$h", "#b91c1c").await.unwrap();
        store.create_session(&token(1), bob.id, T0).await.unwrap();
        store
            .create_session(&token(2), bob.id, T0 + DAY_MS)
            .await
            .unwrap();
        store
            .create_session(&token(3), bob.id, T0 + 3 * DAY_MS)
            .await
            .unwrap();

        let now = T0 + IDLE_MS + 2 * DAY_MS;
        assert_eq!(store.purge_expired_sessions(now, IDLE_MS).await.unwrap(), 2);
        assert_eq!(store.purge_expired_sessions(now, IDLE_MS).await.unwrap(), 0);
        assert_eq!(
            store.session_user(&token(3), now, IDLE_MS).await.unwrap(),
            Some(bob)
        );
        // Times beyond what SQLite holds mean "the far future", not an error.
        assert_eq!(store.purge_expired_sessions(u64::MAX, 0).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn accounts_and_sessions_survive_reopening_the_file() {
        let db = TempDb::new("reopen");
        let bob = {
            let store = SqliteStore::open(&db.0).unwrap();
            let bob = store
                .create_account("Bob", "$argon2id$h", "#b91c1c")
                .await
                .unwrap();
            store.create_session(&token(1), bob.id, T0).await.unwrap();
            bob
        };
        let store = SqliteStore::open(&db.0).unwrap();
        let found = store.account_by_name("bob").await.unwrap().unwrap();
        assert_eq!(found.user, bob);
        assert_eq!(found.password_hash, "$argon2id$h");
        let user = store
            .session_user(&token(1), T0 + DAY_MS, IDLE_MS)
            .await
            .unwrap();
        assert_eq!(user, Some(bob.clone()));
        let err = store
            .create_account("BOB", "$h", "#0369a1")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NameTaken), "{err}");
        let ann = store.create_account("ann", "$h", "#0369a1").await.unwrap();
        assert!(ann.id > bob.id);
        drop(store);

        // The refresh above was kept too: day 1 + 7 days is still live.
        let store = SqliteStore::open(&db.0).unwrap();
        let user = store
            .session_user(&token(1), T0 + DAY_MS + IDLE_MS, IDLE_MS)
            .await;
        assert_eq!(user.unwrap(), Some(bob));
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_a_clear_error() {
        let db = TempDb::new("garbage");
        std::fs::write(&db.0, "this is not a database\n".repeat(200)).unwrap();
        let err = SqliteStore::open(&db.0).unwrap_err();
        let StoreError::Backend(why) = &err else {
            panic!("expected Backend, got {err:?}");
        };
        assert!(why.contains(&db.0.display().to_string()), "{why}");
        assert!(why.contains("not a database"), "{why}");
    }

    #[tokio::test]
    async fn a_file_from_a_newer_relay_is_refused() {
        let db = TempDb::new("newer");
        {
            let conn = Connection::open(&db.0).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&db.0).unwrap_err();
        assert!(
            err.to_string().contains("schema version 99 is newer"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_folder_is_a_clear_error() {
        let path = std::env::temp_dir().join("chat-relay-no-such-folder/x/chat.db");
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("chat-relay-no-such-folder"),
            "{err}"
        );
    }
}
