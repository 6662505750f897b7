//! The relay's domain: presence, client processes, conversations, the
//! message bus and the per-user limits, as a deterministic state machine.
//!
//! Like quinn-proto, the core does no I/O and reads no clock: every event
//! comes in with the time (`now`, Unix milliseconds) and every effect goes
//! out as an [`Outbound`], collected with [`Core::take_outbound`]. The hub
//! (`hub.rs`) feeds it from sockets and timers; the tests below drive it by
//! hand, time included.
//!
//! Rules kept here, by SPEC id: U1–U4 (presence, grace, batched diffs),
//! C1–C2 (idempotent creation, announced to every tab), C5–C8 and C10 (the
//! bus, resends, endings, leaving, groups), R2 (resume), L2 (participants
//! only), L4 (rate limit), L5 (caps).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use shared::protocol::{
    close_code, Activity, ChatMessage, ClientMsg, ClientMsgId, ConversationId,
    ConversationSnapshot, Departure, Ending, ErrorKind, Marks, Resume, Seq, ServerMsg, User,
    UserActivity, UserId, MAX_MESSAGE_CHARS, MAX_PARTICIPANTS, PROTOCOL_VERSION,
};

/// A typist who sends nothing more for this long is no longer typing (SPEC B1).
pub const TYPING_EXPIRY: Duration = Duration::from_secs(5);
/// Typing frames closer together than this are ignored (rate limit).
pub const TYPING_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Unix time in milliseconds.
pub type Millis = u64;

/// One client process (one WebSocket), numbered by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// One browser's sign-in, numbered by the hub; all its tabs share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// The limits the core enforces; each is a relay flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a user with no connection stays online (SPEC U3).
    pub offline_grace: Duration,
    /// At most one presence frame per client per this interval (SPEC U4).
    pub presence_batch: Duration,
    /// Client processes per user (SPEC L5).
    pub connections_per_user: usize,
    /// Conversations a user may hold, live or ended-but-open (SPEC L5).
    pub conversations_per_user: usize,
    /// Participants per conversation, the creator included (SPEC L5, C10).
    pub participants: usize,
    /// Messages kept per conversation (SPEC L5).
    pub history: usize,
    /// Sustained messages per second per user (SPEC L4).
    pub message_rate: f64,
    /// Messages a user may send in a burst (SPEC L4).
    pub message_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            offline_grace: Duration::from_secs(10),
            presence_batch: Duration::from_millis(100),
            connections_per_user: 32,
            conversations_per_user: 100,
            participants: MAX_PARTICIPANTS,
            history: 1_000,
            message_rate: 10.0,
            message_burst: 20.0,
        }
    }
}

/// An effect for the hub to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Send one frame to each of these connections (serialized once).
    Send {
        /// The recipients.
        to: Vec<ConnId>,
        /// The frame.
        msg: ServerMsg,
    },
    /// Greet one connection (SPEC U1, C2, R2).
    Welcome {
        /// The connection.
        conn: ConnId,
        /// What it is told.
        welcome: Welcome,
    },
    /// Close a connection with this code and reason.
    Close {
        /// Which.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Human-readable reason.
        reason: &'static str,
    },
}

/// The online users as last announced to every client (SPEC U1, U4),
/// sorted by name, each with their activity.
///
/// It changes only when a presence batch goes out, so every welcome of
/// one batch window shares it: a newcomer sees the online users as
/// everyone else last heard of them, and the next batch brings it the
/// changes since, as it brings them to everyone. A burst of newcomers thus
/// costs one list per batch, not one per newcomer.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Roster {
    /// Who is online and how present, sorted by name.
    pub online: Vec<(User, Activity)>,
}

/// A `welcome` frame before encoding: the roster is shared with every other
/// welcome of its batch window, and the user's own entry is left out when
/// the frame is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    /// The signed-in user.
    pub me: User,
    /// Their conversations, with the messages the tab lacks.
    pub conversations: Vec<ConversationSnapshot>,
    /// The online users as last announced.
    pub roster: Arc<Roster>,
}

impl Welcome {
    /// The whole frame.
    pub fn to_msg(&self) -> ServerMsg {
        let others = || {
            self.roster
                .online
                .iter()
                .filter(|(u, _)| u.id != self.me.id)
        };
        ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: self.me.clone(),
            online: others().map(|(u, _)| u.clone()).collect(),
            conversations: self.conversations.clone(),
            activity: others()
                .filter(|(_, a)| *a != Activity::Away)
                .map(|(u, a)| UserActivity {
                    user: u.id,
                    activity: *a,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Conn {
    user: UserId,
    session: SessionId,
    /// The tab is focused and visible (SPEC B4).
    active: bool,
}

/// One typist in one conversation (SPEC B1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Typist {
    expires: Millis,
    last_frame: Millis,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserState {
    user: User,
    conns: BTreeSet<ConnId>,
    /// Set while the user has no connection: when the grace period ends.
    offline_at: Option<Millis>,
    /// Conversations in this user's list, live or ended-but-not-closed.
    conversations: BTreeSet<ConversationId>,
    rate: TokenBucket,
    /// The activity last announced (SPEC B4).
    activity: Activity,
}

#[derive(Debug, Serialize, Deserialize)]
struct Conversation {
    id: ConversationId,
    /// Everyone who has been in it, for names and colours after they go.
    members: BTreeMap<UserId, User>,
    /// Who is in it now (a live conversation) or was when it ended.
    participants: BTreeSet<UserId>,
    /// Users whose list still shows it.
    holders: BTreeSet<UserId>,
    history: History,
    next_seq: u64,
    ended: Option<Ending>,
    /// Delivered and read marks by participant (SPEC B2, B3).
    marks: BTreeMap<UserId, (Seq, Seq)>,
    /// Who is typing (SPEC B1).
    typing: BTreeMap<UserId, Typist>,
    /// The participants' connections, as of [`Core::tabs_changed`]'s count:
    /// collected again only after a tab came or went or someone left, not
    /// for every message.
    #[serde(skip)]
    recipients: Option<(u64, Vec<ConnId>)>,
}

impl Conversation {
    /// The sorted participant set, the key of idempotent creation (SPEC C1).
    fn key(&self) -> Vec<UserId> {
        self.participants.iter().copied().collect()
    }

    /// The participants' connections, collected again only if tabs or
    /// participants changed since the last time (`changed`: the core's
    /// count of such changes).
    fn recipients(&mut self, users: &IdMap<UserId, UserState>, changed: u64) -> Vec<ConnId> {
        match &self.recipients {
            Some((at, conns)) if *at == changed => conns.clone(),
            _ => {
                let conns = conns_among(users, self.participants.iter());
                self.recipients = Some((changed, conns.clone()));
                conns
            }
        }
    }

    fn snapshot(&self, after: Option<Seq>) -> ConversationSnapshot {
        let first_held = self.history.front().map_or(self.next_seq, |m| m.seq.0);
        let (messages, gap) = match after {
            // A new tab gets what history holds; older messages are simply gone.
            None => (self.history.iter().cloned().collect(), false),
            Some(Seq(last)) => (
                self.history
                    .iter()
                    .filter(|m| m.seq.0 > last)
                    .cloned()
                    .collect(),
                // The client's number is untrusted: it may be u64::MAX.
                last.saturating_add(1) < first_held,
            ),
        };
        ConversationSnapshot {
            id: self.id,
            participants: self
                .participants
                .iter()
                .filter_map(|id| self.members.get(id).cloned())
                .collect(),
            messages,
            gap,
            ended: self.ended,
            marks: self
                .marks
                .iter()
                .map(|(user, (delivered, read))| Marks {
                    user: *user,
                    delivered: *delivered,
                    read: *read,
                })
                .collect(),
        }
    }

    fn last_seq(&self) -> Seq {
        Seq(self.next_seq.saturating_sub(1))
    }

    fn is_live(&self) -> bool {
        self.ended.is_none()
    }
}

/// A conversation's kept messages, oldest first, with an index of who sent
/// which client id: a resend (SPEC C6) is recognised without a scan of
/// the history, which would cost every message up to `--history` steps.
/// Only the messages are serialized; the index is rebuilt from them.
///
/// The client ids are the clients' choice, yet the index hashes with
/// foldhash (seeded per map) rather than SipHash: it holds at most
/// `--history` entries and takes at most `--message-rate` new ones per
/// user, so even keys that all collided would cost a bounded scan, while
/// SipHash, over three lookups per message and the rehashes a sliding
/// window of inserts and removals brings, was a twentieth of the relay's
/// instructions per message under load.
#[derive(Debug, Default)]
struct History {
    messages: VecDeque<ChatMessage>,
    /// (author, client id) → sequence number, for every message kept.
    sent: HashMap<(UserId, ClientMsgId), Seq, foldhash::fast::RandomState>,
}

impl History {
    fn from_messages(messages: VecDeque<ChatMessage>) -> Self {
        let sent = messages
            .iter()
            .map(|m| ((m.author, m.client_id), m.seq))
            .collect();
        History { messages, sent }
    }

    /// Appends a message, then drops the oldest beyond `keep`.
    fn push(&mut self, message: ChatMessage, keep: usize) {
        self.sent
            .insert((message.author, message.client_id), message.seq);
        self.messages.push_back(message);
        while self.messages.len() > keep {
            let Some(old) = self.messages.pop_front() else {
                break;
            };
            if let Entry::Occupied(entry) = self.sent.entry((old.author, old.client_id)) {
                if *entry.get() == old.seq {
                    entry.remove();
                }
            }
        }
    }

    /// The message `author` sent with `client_id`, if it is still kept.
    fn sent_as(&self, author: UserId, client_id: ClientMsgId) -> Option<&ChatMessage> {
        let seq = self.sent.get(&(author, client_id))?;
        let first = self.messages.front()?.seq.0;
        let index = usize::try_from(seq.0.checked_sub(first)?).ok()?;
        self.messages.get(index).filter(|m| m.seq == *seq)
    }

    fn front(&self) -> Option<&ChatMessage> {
        self.messages.front()
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &ChatMessage> {
        self.messages.iter()
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.messages.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        VecDeque::deserialize(deserializer).map(History::from_messages)
    }
}

/// A token bucket for the message rate limit (SPEC L4), refilled lazily.
#[derive(Debug, Serialize, Deserialize)]
struct TokenBucket {
    tokens: f64,
    updated: Millis,
}

impl TokenBucket {
    fn full(limits: &Limits, now: Millis) -> Self {
        TokenBucket {
            tokens: limits.message_burst,
            updated: now,
        }
    }

    fn take(&mut self, limits: &Limits, now: Millis) -> bool {
        let elapsed = now.saturating_sub(self.updated) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * limits.message_rate).min(limits.message_burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A map keyed by ids the relay assigns (connections, users,
/// conversations), which every message looks up several times: hashed
/// with foldhash rather than SipHash, which was a seventh of the hub's
/// instructions per message (callgrind: 9,849 before, 8,467 after).
/// Participant sets, keys a client chooses from an unbounded space, stay on
/// the standard, DoS-resistant hasher (a conversation's client message ids
/// do not: see [`History`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The whole live state of one relay.
#[derive(Debug, Serialize, Deserialize)]
pub struct Core {
    #[serde(skip)]
    limits: Limits,
    #[serde(with = "pairs")]
    conns: IdMap<ConnId, Conn>,
    #[serde(with = "pairs")]
    users: IdMap<UserId, UserState>,
    #[serde(with = "pairs")]
    conversations: IdMap<ConversationId, Conversation>,
    /// Live conversations by their sorted participant set.
    #[serde(with = "pairs")]
    by_participants: HashMap<Vec<UserId>, ConversationId>,
    next_conversation: u64,
    messages_stamped: u64,
    presence_joined: BTreeMap<UserId, User>,
    presence_left: BTreeSet<UserId>,
    presence_activity: BTreeMap<UserId, Activity>,
    last_presence: Option<Millis>,
    /// Every (conversation, user) with a typist entry, to expire them cheaply.
    typists: BTreeSet<(ConversationId, UserId)>,
    /// The online users as the last presence batch announced them.
    #[serde(with = "shared_roster")]
    roster: Arc<Roster>,
    /// Counts the changes to who is reachable where: a tab came or went,
    /// or a participant left a conversation. Each conversation's cached
    /// recipients hold the count they were collected at.
    #[serde(skip)]
    tabs_changed: u64,
    #[serde(skip)]
    out: Vec<Outbound>,
}

impl Core {
    /// Sets the limits: a core restored from a cluster snapshot takes this
    /// relay's flags.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// An empty relay.
    pub fn new(limits: Limits) -> Self {
        Core {
            limits,
            conns: IdMap::default(),
            users: IdMap::default(),
            conversations: IdMap::default(),
            by_participants: HashMap::new(),
            next_conversation: 1,
            messages_stamped: 0,
            presence_joined: BTreeMap::new(),
            presence_left: BTreeSet::new(),
            presence_activity: BTreeMap::new(),
            last_presence: None,
            typists: BTreeSet::new(),
            roster: Arc::default(),
            tabs_changed: 0,
            out: Vec::new(),
        }
    }

    /// The effects of every event since the last call, in order.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.out)
    }

    /// The effects so far, swapped into `spare` (empty, with the capacity
    /// of an earlier turn), whose capacity the core keeps for the next:
    /// a busy hub takes a turn's effects without growing a vector anew
    /// each time.
    pub fn swap_outbound(&mut self, spare: &mut Vec<Outbound>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.out, spare);
    }

    /// Users online now (including those in their grace period).
    pub fn online_count(&self) -> usize {
        self.users.len()
    }

    /// Live client processes.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Conversations held in memory, live or ended-but-open.
    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// Messages stamped since start.
    pub fn messages_stamped(&self) -> u64 {
        self.messages_stamped
    }

    /// A client process said `hello` (the transport checked the protocol
    /// version): register it and send it the whole state (SPEC U1, C2, R2).
    pub fn connect(
        &mut self,
        conn: ConnId,
        session: SessionId,
        user: User,
        resume: &[Resume],
        now: Millis,
    ) {
        let id = user.id;
        let state = self.users.entry(id).or_insert_with(|| UserState {
            user: user.clone(),
            conns: BTreeSet::new(),
            offline_at: None,
            conversations: BTreeSet::new(),
            rate: TokenBucket::full(&self.limits, now),
            activity: Activity::Reconnecting,
        });
        if state.conns.len() >= self.limits.connections_per_user {
            let limit = self.limits.connections_per_user;
            let refuse = ServerMsg::error(
                ErrorKind::TooManyConnections,
                format!("you already have {limit} tabs open; close one and reload"),
            );
            self.send(vec![conn], refuse);
            self.out.push(Outbound::Close {
                conn,
                code: close_code::POLICY_VIOLATION,
                reason: "too many connections",
            });
            return;
        }
        let newly_online = state.conns.is_empty() && state.offline_at.is_none();
        state.conns.insert(conn);
        state.offline_at = None;
        self.tabs_changed += 1;
        self.conns.insert(
            conn,
            Conn {
                user: id,
                session,
                active: false,
            },
        );
        if newly_online {
            self.presence_left.remove(&id);
            self.presence_joined.insert(id, user.clone());
        }
        self.refresh_activity(id, newly_online);

        let resume: HashMap<ConversationId, Seq> = resume
            .iter()
            .map(|r| (r.conversation, r.last_seq))
            .collect();
        let conversations = self.users[&id]
            .conversations
            .iter()
            .filter_map(|c| self.conversations.get(c))
            .map(|c| c.snapshot(resume.get(&c.id).copied()))
            .collect();
        let welcome = Welcome {
            me: user,
            conversations,
            roster: Arc::clone(&self.roster),
        };
        self.out.push(Outbound::Welcome { conn, welcome });
    }

    /// A client process is gone. Its user stays online for the grace
    /// period if it was their last (SPEC U3).
    pub fn disconnect(&mut self, conn: ConnId, now: Millis) {
        let Some(Conn { user, .. }) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(state) = self.users.get_mut(&user) {
            state.conns.remove(&conn);
            self.tabs_changed += 1;
            if state.conns.is_empty() {
                state.offline_at = Some(now + millis(self.limits.offline_grace));
            }
        }
        self.refresh_activity(user, false);
    }

    /// Recomputes a user's activity from their tabs (SPEC B4) and queues
    /// a change for the next presence batch (always, for a newcomer).
    fn refresh_activity(&mut self, user: UserId, announce: bool) {
        let Some(state) = self.users.get(&user) else {
            return;
        };
        let activity = if state.conns.is_empty() {
            Activity::Reconnecting
        } else if state
            .conns
            .iter()
            .any(|c| self.conns.get(c).is_some_and(|c| c.active))
        {
            Activity::Active
        } else {
            Activity::Away
        };
        if announce || activity != state.activity {
            if let Some(state) = self.users.get_mut(&user) {
                state.activity = activity;
            }
            self.presence_activity.insert(user, activity);
        }
    }

    /// A session ended (log out or expiry): every tab of it is told and
    /// closed (SPEC S5). The user's other sessions stay.
    pub fn end_session(&mut self, session: SessionId, now: Millis) {
        let mut closing: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(id, _)| *id)
            .collect();
        closing.sort();
        for conn in closing {
            self.out.push(Outbound::Close {
                conn,
                code: close_code::SIGNED_OUT,
                reason: "signed out",
            });
            self.disconnect(conn, now);
        }
    }

    /// A frame from a client process that has said `hello`.
    pub fn frame(&mut self, conn: ConnId, msg: ClientMsg, now: Millis) {
        let Some(user) = self.conns.get(&conn).map(|c| c.user) else {
            return;
        };
        match msg {
            ClientMsg::Hello { .. } => self.refuse(
                conn,
                ErrorKind::HelloRequired,
                "hello was already said",
                None,
            ),
            ClientMsg::Ping { nonce } => self.send(vec![conn], ServerMsg::Pong { nonce }),
            ClientMsg::Open { with } => self.open(conn, user, with),
            ClientMsg::Send {
                conversation,
                client_id,
                text,
            } => self.post(conn, user, conversation, client_id, text, now),
            ClientMsg::Leave { conversation } => self.leave(conn, user, conversation),
            ClientMsg::Typing { conversation } => self.typing(conn, user, conversation, now),
            ClientMsg::Marks {
                conversation,
                delivered,
                read,
            } => self.marks(conn, user, conversation, delivered, read),
            ClientMsg::Activity { active } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.active = active;
                }
                self.refresh_activity(user, false);
            }
        }
    }

    /// SPEC B1: announce a typist to the others once, then keep them
    /// typing until they stop for [`TYPING_EXPIRY`], send, or leave.
    fn typing(&mut self, conn: ConnId, me: UserId, id: ConversationId, now: Millis) {
        if !self.holds(me, id) {
            return self.refuse_unknown(conn, None);
        }
        let Some(conversation) = self.conversations.get_mut(&id) else {
            return;
        };
        if !conversation.is_live() {
            return;
        }
        let expires = now + millis(TYPING_EXPIRY);
        let started = match conversation.typing.get_mut(&me) {
            Some(typist) if now < typist.last_frame + millis(TYPING_MIN_INTERVAL) => false,
            Some(typist) => {
                typist.expires = expires;
                typist.last_frame = now;
                false
            }
            None => {
                let typist = Typist {
                    expires,
                    last_frame: now,
                };
                conversation.typing.insert(me, typist);
                self.typists.insert((id, me));
                true
            }
        };
        if started {
            self.announce_typing(id, me, true);
        }
    }

    /// Ends `user`'s typing in `id`, telling the other participants.
    fn stop_typing(&mut self, id: ConversationId, user: UserId) {
        self.typists.remove(&(id, user));
        let stopped = self
            .conversations
            .get_mut(&id)
            .is_some_and(|c| c.typing.remove(&user).is_some());
        if stopped {
            self.announce_typing(id, user, false);
        }
    }

    /// Tells the other participants that `user` started or stopped typing.
    fn announce_typing(&mut self, id: ConversationId, user: UserId, active: bool) {
        let Some(conversation) = self.conversations.get(&id) else {
            return;
        };
        let to = self.conns_of(conversation.participants.iter().filter(|u| **u != user));
        self.send(
            to,
            ServerMsg::Typing {
                conversation: id,
                user,
                active,
            },
        );
    }

    /// SPEC B2, B3: marks only move forward, never past the last message;
    /// every holder's tabs hear when they move (the user's own other tabs
    /// included, so unread counts agree).
    fn marks(&mut self, conn: ConnId, me: UserId, id: ConversationId, delivered: Seq, read: Seq) {
        if !self.holds(me, id) {
            return self.refuse_unknown(conn, None);
        }
        let Some(conversation) = self.conversations.get_mut(&id) else {
            return;
        };
        let last = conversation.last_seq();
        let read = read.min(last);
        let delivered = delivered.min(last).max(read);
        let old = conversation
            .marks
            .get(&me)
            .copied()
            .unwrap_or((Seq(0), Seq(0)));
        let new = (old.0.max(delivered), old.1.max(read));
        if new == old {
            return;
        }
        conversation.marks.insert(me, new);
        let holders: Vec<UserId> = conversation.holders.iter().copied().collect();
        let to = self.conns_of(holders.iter());
        self.send(
            to,
            ServerMsg::Marks {
                conversation: id,
                marks: Marks {
                    user: me,
                    delivered: new.0,
                    read: new.1,
                },
            },
        );
    }

    /// Advances time: [`Core::expire`], then [`Core::send_presence`]. A
    /// single relay's hub calls the two itself: it expires every
    /// `presence_batch` and sends presence on its own schedule.
    pub fn tick(&mut self, now: Millis) {
        self.expire(now);
        self.send_presence(now);
    }

    /// Ends the grace periods and typing indicators that are over by `now`
    /// (SPEC U3, C7, C10, B1).
    pub fn expire(&mut self, now: Millis) {
        let mut expired: Vec<UserId> = self
            .users
            .values()
            .filter(|u| u.offline_at.is_some_and(|at| at <= now))
            .map(|u| u.user.id)
            .collect();
        expired.sort();
        for user in expired {
            self.go_offline(user);
        }
        let stale: Vec<(ConversationId, UserId)> = self
            .typists
            .iter()
            .copied()
            .filter(|(c, u)| {
                self.conversations
                    .get(c)
                    .and_then(|c| c.typing.get(u))
                    .is_none_or(|t| t.expires <= now)
            })
            .collect();
        for (conversation, user) in stale {
            self.stop_typing(conversation, user);
        }
        self.release_emptied_tables();
    }

    /// Sends the batched presence diffs (SPEC U4) if they are due by `now`.
    pub fn send_presence(&mut self, now: Millis) {
        if self.presence_due().is_some_and(|due| now >= due) {
            self.flush_presence();
            self.last_presence = Some(now);
        }
    }

    /// When the pending presence changes may go out (SPEC U4): one batch
    /// interval after the last presence frame, so a change after a quiet
    /// spell goes at once and a burst waits at most one interval; `None`
    /// with nothing pending.
    pub fn presence_due(&self) -> Option<Millis> {
        let pending = !(self.presence_joined.is_empty()
            && self.presence_left.is_empty()
            && self.presence_activity.is_empty());
        pending.then(|| {
            self.last_presence
                .map_or(0, |last| last + millis(self.limits.presence_batch))
        })
    }

    /// Gives back the memory of every table that has emptied. A map keeps
    /// the capacity of its largest size, allocated while the crowd was
    /// arriving; once everyone has left, that block alone would keep its
    /// pages of the allocator from going back to the system (the soak in
    /// docs/RELIABILITY.md). A table that empties while in use is
    /// reallocated as it fills again: a few small allocations.
    fn release_emptied_tables(&mut self) {
        release_if_empty(&mut self.conns);
        release_if_empty(&mut self.users);
        release_if_empty(&mut self.conversations);
        release_if_empty(&mut self.by_participants);
    }

    fn flush_presence(&mut self) {
        let joined = std::mem::take(&mut self.presence_joined);
        let left = std::mem::take(&mut self.presence_left);
        // A newcomer who is away needs no entry: away is what a joined
        // user without one is. At thousands joining, that is a third of
        // every presence frame.
        let activity: Vec<UserActivity> = std::mem::take(&mut self.presence_activity)
            .into_iter()
            .filter(|(user, _)| self.users.contains_key(user))
            .filter(|(user, activity)| !(*activity == Activity::Away && joined.contains_key(user)))
            .map(|(user, activity)| UserActivity { user, activity })
            .collect();
        let mut joined_users: Vec<User> = joined.values().cloned().collect();
        joined_users.sort_by_cached_key(name_order);
        let mut recipients: Vec<(UserId, Vec<ConnId>)> = self
            .users
            .values()
            .filter(|u| !u.conns.is_empty())
            .map(|u| (u.user.id, u.conns.iter().copied().collect()))
            .collect();
        recipients.sort();
        // Most recipients get the same frame; the users named in it get
        // one without themselves (SPEC U1: never yourself).
        let everyone = ServerMsg::Presence {
            joined: joined_users.clone(),
            left: left.iter().copied().collect(),
            activity: activity.clone(),
        };
        let mut common = Vec::new();
        for (user, conns) in recipients {
            let named = joined.contains_key(&user)
                || left.contains(&user)
                || activity.iter().any(|a| a.user == user);
            if named {
                let msg = ServerMsg::Presence {
                    joined: joined_users
                        .iter()
                        .filter(|u| u.id != user)
                        .cloned()
                        .collect(),
                    left: left.iter().copied().filter(|u| *u != user).collect(),
                    activity: activity
                        .iter()
                        .copied()
                        .filter(|a| a.user != user)
                        .collect(),
                };
                let empty = matches!(&msg, ServerMsg::Presence { joined, left, activity }
                    if joined.is_empty() && left.is_empty() && activity.is_empty());
                if !empty {
                    self.send(conns, msg);
                }
            } else {
                common.extend(conns);
            }
        }
        if !common.is_empty() {
            self.send(common, everyone);
        }
        self.roster = Arc::new(self.announced_roster());
    }

    /// Everyone online now, sorted by name: what a presence batch has
    /// just told every client.
    fn announced_roster(&self) -> Roster {
        let mut online: Vec<(User, Activity)> = self
            .users
            .values()
            .map(|u| (u.user.clone(), u.activity))
            .collect();
        online.sort_by_cached_key(|(user, _)| name_order(user));
        Roster { online }
    }

    fn go_offline(&mut self, user: UserId) {
        let Some(state) = self.users.remove(&user) else {
            return;
        };
        self.tabs_changed += 1;
        if self.presence_joined.remove(&user).is_none() {
            self.presence_left.insert(user);
        }
        self.presence_activity.remove(&user);
        for conversation in state.conversations {
            self.depart(conversation, user, Departure::WentOffline);
        }
    }

    /// SPEC C1, C2, C10, L5.
    fn open(&mut self, conn: ConnId, me: UserId, with: Vec<UserId>) {
        let mut participants: BTreeSet<UserId> = with.into_iter().collect();
        participants.insert(me);
        if participants.len() < 2 || participants.len() > self.limits.participants {
            let max = self.limits.participants;
            return self.refuse(
                conn,
                ErrorKind::BadParticipants,
                &format!("a conversation has 2 to {max} participants, you included"),
                None,
            );
        }
        if let Some(offline) = participants.iter().find(|u| !self.users.contains_key(u)) {
            return self.refuse(
                conn,
                ErrorKind::UserOffline,
                &format!("user {offline} is not online"),
                None,
            );
        }
        let key: Vec<UserId> = participants.iter().copied().collect();
        if let Some(&existing) = self.by_participants.get(&key) {
            return self.send(
                vec![conn],
                ServerMsg::Opened {
                    conversation: existing,
                },
            );
        }
        let cap = self.limits.conversations_per_user;
        if let Some(full) = participants
            .iter()
            .map(|u| &self.users[u])
            .find(|u| u.conversations.len() >= cap)
        {
            let message = if full.user.id == me {
                format!("you have {cap} conversations open; close one first")
            } else {
                format!("{} has too many conversations open", full.user.name)
            };
            return self.refuse(conn, ErrorKind::TooManyConversations, &message, None);
        }

        let id = ConversationId(self.next_conversation);
        self.next_conversation += 1;
        let members = participants
            .iter()
            .map(|u| (*u, self.users[u].user.clone()))
            .collect();
        let conversation = Conversation {
            id,
            members,
            participants: participants.clone(),
            holders: participants.clone(),
            history: History::default(),
            next_seq: 1,
            ended: None,
            marks: BTreeMap::new(),
            typing: BTreeMap::new(),
            recipients: None,
        };
        let started = ServerMsg::Started {
            conversation: conversation.snapshot(None),
        };
        self.by_participants.insert(key, id);
        self.conversations.insert(id, conversation);
        for user in &participants {
            if let Some(state) = self.users.get_mut(user) {
                state.conversations.insert(id);
            }
        }
        let to = self.conns_of(participants.iter());
        self.send(to, started);
        self.send(vec![conn], ServerMsg::Opened { conversation: id });
    }

    /// SPEC C4, C5, C6, L2, L4.
    fn post(
        &mut self,
        conn: ConnId,
        me: UserId,
        id: ConversationId,
        client_id: ClientMsgId,
        text: String,
        now: Millis,
    ) {
        let refuse = |core: &mut Core, kind, message: &str| {
            core.refuse(conn, kind, message, Some(client_id))
        };
        if !self.holds(me, id) {
            return self.refuse_unknown(conn, Some(client_id));
        }
        let Some(conversation) = self.conversations.get(&id) else {
            return;
        };
        if !conversation.is_live() {
            return refuse(
                self,
                ErrorKind::ConversationEnded,
                "this conversation has ended",
            );
        }
        // A resend of a message already stamped: confirm it to this tab only (SPEC C6).
        if let Some(original) = conversation.history.sent_as(me, client_id) {
            let msg = ServerMsg::Message {
                conversation: id,
                message: original.clone(),
            };
            return self.send(vec![conn], msg);
        }
        if text.trim().is_empty() {
            return refuse(self, ErrorKind::EmptyMessage, "a message needs some text");
        }
        // A character takes at least one byte: most texts need no count.
        if text.len() > MAX_MESSAGE_CHARS && text.chars().count() > MAX_MESSAGE_CHARS {
            return refuse(
                self,
                ErrorKind::MessageTooLong,
                &format!("messages are at most {MAX_MESSAGE_CHARS} characters"),
            );
        }
        let limits = &self.limits;
        let allowed = self
            .users
            .get_mut(&me)
            .is_some_and(|u| u.rate.take(limits, now));
        if !allowed {
            return refuse(
                self,
                ErrorKind::SlowDown,
                "slow down: too many messages; try again in a moment",
            );
        }

        let Some(conversation) = self.conversations.get_mut(&id) else {
            return;
        };
        let message = ChatMessage {
            seq: Seq(conversation.next_seq),
            author: me,
            time: now,
            text,
            client_id,
        };
        conversation.next_seq += 1;
        self.messages_stamped += 1;
        conversation
            .history
            .push(message.clone(), self.limits.history);
        let mut to = conversation.recipients(&self.users, self.tabs_changed);
        // The posting tab's confirmation is queued first, the others' copies
        // after it: the runtime runs the task woken last first, on the same
        // thread, so the recipients' writes do not wait behind the sender's.
        if let Some(at) = to.iter().position(|&c| c == conn) {
            to[..=at].rotate_right(1);
        }
        self.send(
            to,
            ServerMsg::Message {
                conversation: id,
                message,
            },
        );
        self.stop_typing(id, me);
    }

    /// SPEC C8: leave (or close an ended conversation).
    fn leave(&mut self, conn: ConnId, me: UserId, id: ConversationId) {
        if !self.holds(me, id) {
            return self.refuse_unknown(conn, None);
        }
        if let Some(state) = self.users.get_mut(&me) {
            state.conversations.remove(&id);
        }
        let to = self.conns_of([me].iter());
        self.send(to, ServerMsg::Closed { conversation: id });
        self.depart(id, me, Departure::Left);
    }

    /// `user` is no longer in conversation `id`: tell the others, end it if
    /// fewer than two remain, free it once nobody holds it (SPEC C7, C8, C10).
    fn depart(&mut self, id: ConversationId, user: UserId, reason: Departure) {
        self.stop_typing(id, user);
        let Some(conversation) = self.conversations.get_mut(&id) else {
            return;
        };
        conversation.holders.remove(&user);
        if conversation.is_live() {
            let key = conversation.key();
            let remaining: Vec<UserId> = conversation
                .participants
                .iter()
                .copied()
                .filter(|u| *u != user)
                .collect();
            let msg = if remaining.len() < 2 {
                let ending = Ending { user, reason };
                conversation.ended = Some(ending);
                unindex(&mut self.by_participants, &key, id);
                ServerMsg::Ended {
                    conversation: id,
                    ending,
                }
            } else {
                conversation.participants.remove(&user);
                self.tabs_changed += 1;
                unindex(&mut self.by_participants, &key, id);
                // A group that shrinks to the set of another live conversation
                // (say, an existing dialog) leaves that one as the one to open.
                self.by_participants.entry(conversation.key()).or_insert(id);
                ServerMsg::Departed {
                    conversation: id,
                    user,
                    reason,
                }
            };
            let to = self.conns_of(remaining.iter());
            self.send(to, msg);
        }
        if self
            .conversations
            .get(&id)
            .is_some_and(|c| c.holders.is_empty())
        {
            self.conversations.remove(&id);
        }
    }

    /// True if `user`'s list shows conversation `id` (SPEC L2: all else is
    /// "no such conversation", whether it exists or not).
    fn holds(&self, user: UserId, id: ConversationId) -> bool {
        self.conversations
            .get(&id)
            .is_some_and(|c| c.holders.contains(&user))
    }

    fn refuse_unknown(&mut self, conn: ConnId, client_id: Option<ClientMsgId>) {
        self.refuse(
            conn,
            ErrorKind::NoSuchConversation,
            "no such conversation",
            client_id,
        );
    }

    fn conns_of<'a>(&self, users: impl Iterator<Item = &'a UserId>) -> Vec<ConnId> {
        conns_among(&self.users, users)
    }

    fn send(&mut self, to: Vec<ConnId>, msg: ServerMsg) {
        if !to.is_empty() {
            self.out.push(Outbound::Send { to, msg });
        }
    }

    fn refuse(
        &mut self,
        conn: ConnId,
        kind: ErrorKind,
        message: &str,
        client_id: Option<ClientMsgId>,
    ) {
        let msg = ServerMsg::Error {
            kind,
            message: message.to_string(),
            client_id,
        };
        self.send(vec![conn], msg);
    }
}

/// Maps as lists of pairs in the state's serialized form (cluster
/// snapshots): their keys need not be strings.
mod pairs {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, Hash};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, H, S>(map: &HashMap<K, V, H>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, H, D>(deserializer: D) -> Result<HashMap<K, V, H>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        H: BuildHasher + Default,
        D: Deserializer<'de>,
    {
        Vec::<(K, V)>::deserialize(deserializer).map(|pairs| pairs.into_iter().collect())
    }
}

/// The shared roster in the state's serialized form: the list itself.
mod shared_roster {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Roster;

    pub fn serialize<S: Serializer>(
        roster: &Arc<Roster>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        roster.as_ref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<Roster>, D::Error> {
        Roster::deserialize(deserializer).map(Arc::new)
    }
}

/// Frees an empty map's table (see `Core::release_emptied_tables`).
pub(crate) fn release_if_empty<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    if map.is_empty() && map.capacity() > 0 {
        map.shrink_to_fit();
    }
}

fn unindex(index: &mut HashMap<Vec<UserId>, ConversationId>, key: &[UserId], id: ConversationId) {
    if index.get(key) == Some(&id) {
        index.remove(key);
    }
}

/// Users sort by name ignoring case, then by id. The key is made once per
/// user, not once per comparison: the roster sorts everyone online.
fn name_order(user: &User) -> (String, UserId) {
    (user.name.to_lowercase(), user.id)
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The connections of `wanted` among `users`: a free function, so a caller
/// holding one conversation mutably can still reach the users beside it.
fn conns_among<'a>(
    users: &IdMap<UserId, UserState>,
    wanted: impl Iterator<Item = &'a UserId>,
) -> Vec<ConnId> {
    wanted
        .filter_map(|u| users.get(u))
        .flat_map(|u| u.conns.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests;
