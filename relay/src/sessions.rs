//! Live sessions and the weak user registry.
//!
//! The store keeps sessions durably (hashed tokens); this module keeps what
//! the relay needs of them while it runs. Every live session of a user
//! holds a strong reference ([`Arc`]) to one shared [`SessionGroup`], the
//! user's info; the registry maps each user id to a [`Weak`] reference to
//! it. So any request can reach a signed-in user's group by id, and the
//! entry dies by itself with the user's last session (log out, expiry):
//! nothing to keep in step by hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use shared::protocol::{User, UserId};

use crate::core::{Millis, SessionId};
use crate::store::TokenHash;

/// What all live sessions of one user share.
#[derive(Debug)]
pub struct SessionGroup {
    /// The user.
    pub user: User,
}

/// One browser's sign-in, as the relay holds it while it is in use.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The relay's number for it (connections carry it, so that log out can
    /// close exactly this browser's tabs).
    pub id: SessionId,
    /// The user's group: a strong reference.
    pub group: Arc<SessionGroup>,
    last_used: Millis,
}

/// Every live session, and the registry of session groups.
#[derive(Debug, Default)]
pub struct Sessions {
    // A std Mutex is right here: it is never held across an `.await`, and
    // every critical section is a few map operations.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_token: HashMap<TokenHash, LiveSession>,
    registry: HashMap<UserId, Weak<SessionGroup>>,
}

/// The number of a browser's session: the first bytes of its token's hash,
/// so every relay of a cluster gives a session the same number and a log
/// out on one relay closes the browser's tabs on all of them.
pub fn session_id(token: &TokenHash) -> SessionId {
    let mut first = [0; 8];
    first.copy_from_slice(&token.0[..8]);
    SessionId(u64::from_le_bytes(first))
}

impl Sessions {
    /// The live session for a token the store has just vouched for, joining
    /// the user's group (or starting it).
    pub fn attach(&self, token: TokenHash, user: User, now: Millis) -> LiveSession {
        let mut inner = self.lock();
        if let Some(session) = inner.by_token.get_mut(&token) {
            session.last_used = now;
            return session.clone();
        }
        let group = match inner.registry.get(&user.id).and_then(Weak::upgrade) {
            Some(group) => group,
            None => {
                let group = Arc::new(SessionGroup { user });
                inner.registry.insert(group.user.id, Arc::downgrade(&group));
                group
            }
        };
        let session = LiveSession {
            id: session_id(&token),
            group,
            last_used: now,
        };
        inner.by_token.insert(token, session.clone());
        session
    }

    /// Ends a session (log out): returns it if it was live.
    pub fn detach(&self, token: &TokenHash) -> Option<LiveSession> {
        let mut inner = self.lock();
        let session = inner.by_token.remove(token)?;
        let user = session.group.user.id;
        // The caller's clone is the last strong reference if this was the
        // user's last session; the registry entry is dead once it is dropped.
        inner.drop_dead(user, 1);
        Some(session)
    }

    /// Forgets sessions unused since `before` (the store expires them too).
    pub fn forget_idle(&self, before: Millis) -> usize {
        let mut inner = self.lock();
        let idle: Vec<TokenHash> = inner
            .by_token
            .iter()
            .filter(|(_, s)| s.last_used < before)
            .map(|(t, _)| *t)
            .collect();
        for token in &idle {
            if let Some(session) = inner.by_token.remove(token) {
                let user = session.group.user.id;
                drop(session);
                inner.drop_dead(user, 0);
            }
        }
        idle.len()
    }

    /// The session group of a signed-in user, if any session of theirs is live.
    pub fn group(&self, user: UserId) -> Option<Arc<SessionGroup>> {
        self.lock().registry.get(&user).and_then(Weak::upgrade)
    }

    /// How many users have a live session.
    pub fn signed_in_users(&self) -> usize {
        self.lock()
            .registry
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (each
        // operation is a single insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Removes the registry entry of `user` when no more than `held` strong
    /// references remain outside the session map.
    fn drop_dead(&mut self, user: UserId, held: usize) {
        if self
            .registry
            .get(&user)
            .is_some_and(|w| w.strong_count() <= held)
        {
            self.registry.remove(&user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            id: UserId(1),
            name: "alice".into(),
            color: "#000000".into(),
        }
    }

    #[test]
    fn sessions_of_one_user_share_one_group_that_dies_with_the_last() {
        let sessions = Sessions::default();
        let laptop = sessions.attach(TokenHash([1; 32]), alice(), 0);
        let phone = sessions.attach(TokenHash([2; 32]), alice(), 0);
        assert_ne!(laptop.id, phone.id);
        assert!(Arc::ptr_eq(&laptop.group, &phone.group));
        let weak = Arc::downgrade(&laptop.group);
        drop((laptop, phone));

        // The same token maps to the same live session.
        let again = sessions.attach(TokenHash([1; 32]), alice(), 5);
        assert_eq!(again.id, session_id(&TokenHash([1; 32])));
        drop(again);

        let ended = sessions.detach(&TokenHash([1; 32])).map(|s| s.id);
        assert_eq!(ended, Some(session_id(&TokenHash([1; 32]))));
        assert!(
            sessions.group(UserId(1)).is_some(),
            "the phone is still signed in"
        );
        assert!(weak.upgrade().is_some());

        drop(sessions.detach(&TokenHash([2; 32])));
        assert!(
            sessions.group(UserId(1)).is_none(),
            "the entry died with the last session"
        );
        assert!(weak.upgrade().is_none(), "the user info is freed");
        assert_eq!(sessions.signed_in_users(), 0);
        assert!(sessions.detach(&TokenHash([2; 32])).is_none());
    }

    #[test]
    fn idle_sessions_are_forgotten_and_their_group_with_them() {
        let sessions = Sessions::default();
        drop(sessions.attach(TokenHash([1; 32]), alice(), 100));
        drop(sessions.attach(TokenHash([2; 32]), alice(), 500));
        assert_eq!(sessions.forget_idle(200), 1);
        assert!(sessions.group(UserId(1)).is_some());
        assert_eq!(sessions.forget_idle(1_000), 1);
        assert!(sessions.group(UserId(1)).is_none());
    }
}
