//! The client-side conversation model: everything the page shows, as plain
//! data, and every rule for changing it.
//!
//! [`ChatState::apply`] takes the relay's frames one at a time; the user's
//! intents ([`ChatState::send`], [`ChatState::retry`], [`ChatState::open`],
//! [`ChatState::close`]) update the state and return the [`ClientMsg`] to
//! send. Nothing here touches a socket, a clock or the DOM, so the rules of
//! presence, conversations and reconnection (SPEC U, C, R) are pure functions
//! tested natively with `cargo test`. The Yew store in `frontend/` only adapts
//! this state to a reducer; it holds no rules of its own.
//!
//! No frame, however odd (a message for an unknown conversation, a leave for
//! someone absent, a duplicate), makes this code panic (SPEC L7): what cannot
//! be applied is ignored.

use std::collections::BTreeSet;
use std::fmt;

use crate::protocol::{
    ChatMessage, ClientMsg, ClientMsgId, ConversationId, ConversationSnapshot, Departure, Ending,
    Resume, Seq, ServerMsg, User, UserId, MAX_MESSAGE_CHARS, PROTOCOL_VERSION,
};

/// The notice shown where the relay could not fill a gap in the history (SPEC R2).
pub const GAP_NOTICE: &str = "Some earlier messages could not be loaded";

/// The notice shown when the relay no longer knows a live conversation.
pub const LOST_NOTICE: &str = "This conversation ended when the server restarted";

/// The failure given to unconfirmed messages of a conversation that ended.
pub const NOT_SENT_ENDED: &str = "Not sent: the conversation has ended";

/// Client message ids stay below 2^53, so that they are exact as JSON numbers
/// in any reader, JavaScript included.
const CLIENT_ID_MASK: u64 = (1 << 53) - 1;

/// Why a conversation is no longer live, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Someone left or went offline (from `ended`, or a snapshot's `ended`).
    By(Ending),
    /// The relay no longer knows it (e.g. it restarted): after a reconnect,
    /// the welcome did not include it.
    Lost,
}

/// One line of a conversation's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message stamped by the relay.
    Message(ChatMessage),
    /// A notice: "NAME left", "NAME went offline", [`GAP_NOTICE`], [`LOST_NOTICE`].
    Notice(String),
}

/// A message of mine the relay has not confirmed yet (SPEC C6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The id it was sent with; the relay's echo carries it back.
    pub client_id: ClientMsgId,
    /// The text, exactly as sent.
    pub text: String,
    /// Set when the relay refused it (slow down, …): the text is kept and
    /// the reason shown.
    pub failed: Option<String>,
}

/// One conversation as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The relay's id.
    pub id: ConversationId,
    /// Everyone who was in it (names and colours for messages), me included,
    /// sorted by id.
    pub members: Vec<User>,
    /// Ids of those in it now (for a live conversation), me included, sorted.
    pub participants: Vec<UserId>,
    /// Messages and notices, in order.
    pub entries: Vec<Entry>,
    /// My messages not yet confirmed, in the order they were sent.
    pub pending: Vec<Pending>,
    /// The highest sequence number received (`Seq(0)` if none).
    pub last_seq: Seq,
    /// Set once it is no longer live: readable, its prompt disabled (SPEC C7).
    pub ended: Option<Ended>,
}

impl Conversation {
    /// A conversation first seen in a snapshot.
    fn from_snapshot(snapshot: ConversationSnapshot, me: Option<UserId>) -> Self {
        let mut conversation = Conversation {
            id: snapshot.id,
            members: Vec::new(),
            participants: Vec::new(),
            entries: Vec::new(),
            pending: Vec::new(),
            last_seq: Seq(0),
            ended: None,
        };
        conversation.merge(snapshot, me, false);
        conversation
    }

    /// "Conversation with NAMES" (SPEC C3): see [`Conversation::others`].
    pub fn title(&self, me: UserId) -> String {
        format!("Conversation with {}", self.others(me).join(", "))
    }

    /// The other participants' names, sorted ignoring case, then exactly.
    ///
    /// For an ended conversation these are the other members at the end,
    /// the one whose departure ended it included, so that a dialog keeps its
    /// name once the other person went. Should the rule name nobody, every
    /// other member is named instead, so a title is never empty of names.
    pub fn others(&self, me: UserId) -> Vec<String> {
        let mut ids = self.participants.clone();
        if let Some(Ended::By(ending)) = self.ended {
            ids.push(ending.user);
        }
        ids.sort();
        ids.dedup();
        let mut names: Vec<String> = ids
            .into_iter()
            .filter(|id| *id != me)
            .filter_map(|id| self.member(id))
            .map(|user| user.name.clone())
            .collect();
        if names.is_empty() {
            names = self
                .members
                .iter()
                .filter(|user| user.id != me)
                .map(|user| user.name.clone())
                .collect();
        }
        names.sort_by(|a, b| a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b)));
        names
    }

    /// Someone who is or was in it.
    pub fn member(&self, id: UserId) -> Option<&User> {
        self.members.iter().find(|user| user.id == id)
    }

    /// True while messages can be posted to it.
    pub fn is_live(&self) -> bool {
        self.ended.is_none()
    }

    /// The messages only, in order.
    pub fn messages(&self) -> impl Iterator<Item = &ChatMessage> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Message(message) => Some(message),
            Entry::Notice(_) => None,
        })
    }

    /// The name to show for a user, even one the snapshot never named.
    fn name_of(&self, id: UserId) -> String {
        self.member(id)
            .map_or_else(|| "Someone".to_string(), |user| user.name.clone())
    }

    /// Adds (or refreshes) a member, keeping the list sorted by id.
    fn add_member(&mut self, user: User) {
        match self.members.binary_search_by_key(&user.id, |u| u.id) {
            Ok(i) => self.members[i] = user,
            Err(i) => self.members.insert(i, user),
        }
    }

    /// Folds a snapshot in: members and participants from it, the messages
    /// after `last_seq` appended in order (none shown twice), a notice where
    /// history has a hole, and its `ended`. `known` is false for a
    /// conversation seen for the first time, whose history may start late
    /// without that being a gap.
    fn merge(&mut self, snapshot: ConversationSnapshot, me: Option<UserId>, known: bool) {
        let mut participants = Vec::with_capacity(snapshot.participants.len());
        for user in snapshot.participants {
            participants.push(user.id);
            self.add_member(user);
        }
        participants.sort();
        participants.dedup();
        self.participants = participants;

        let first_new = snapshot
            .messages
            .iter()
            .map(|m| m.seq)
            .find(|seq| *seq > self.last_seq);
        let hole = known && first_new.is_some_and(|seq| seq.0 > self.last_seq.0.saturating_add(1));
        if snapshot.gap || hole {
            self.entries.push(Entry::Notice(GAP_NOTICE.to_string()));
        }
        for message in snapshot.messages {
            self.receive(message, me);
        }

        match (self.ended, snapshot.ended) {
            (Some(Ended::By(held)), Some(ending)) if held == ending => {
                // Already shown; the relay's participants are those at the
                // end, so keep the one who ended it out of the live list.
                self.participants.retain(|id| *id != ending.user);
            }
            (_, Some(ending)) => self.end(Ended::By(ending)),
            (_, None) => self.ended = None,
        }
    }

    /// Appends a message unless it is already held; confirms my pending one.
    fn receive(&mut self, message: ChatMessage, me: Option<UserId>) {
        if message.seq <= self.last_seq {
            return;
        }
        if Some(message.author) == me {
            self.pending.retain(|p| p.client_id != message.client_id);
        }
        self.last_seq = message.seq;
        self.entries.push(Entry::Message(message));
    }

    /// Someone is no longer in it: announced by name, once.
    fn depart(&mut self, user: UserId, reason: Departure) {
        if !self.participants.contains(&user) {
            return;
        }
        self.participants.retain(|id| *id != user);
        let notice = departure_notice(&self.name_of(user), reason);
        self.entries.push(Entry::Notice(notice));
    }

    /// It is no longer live: say why, and fail what was not confirmed.
    fn end(&mut self, how: Ended) {
        self.ended = Some(how);
        let notice = match how {
            Ended::By(ending) => {
                self.participants.retain(|id| *id != ending.user);
                departure_notice(&self.name_of(ending.user), ending.reason)
            }
            Ended::Lost => LOST_NOTICE.to_string(),
        };
        self.entries.push(Entry::Notice(notice));
        for pending in &mut self.pending {
            pending.failed = Some(NOT_SENT_ENDED.to_string());
        }
    }
}

/// "NAME left" / "NAME went offline" (SPEC C7, C8, C10).
fn departure_notice(name: &str, reason: Departure) -> String {
    match reason {
        Departure::Left => format!("{name} left"),
        Departure::WentOffline => format!("{name} went offline"),
    }
}

/// Why the page refused to send (SPEC C4): shown next to the box; the text
/// stays in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Nothing but whitespace.
    Blank,
    /// Over [`MAX_MESSAGE_CHARS`]; `chars` is the text's length in characters.
    TooLong {
        /// How many characters the text has.
        chars: usize,
    },
    /// The page holds no such conversation.
    NoSuchConversation,
    /// The conversation has ended.
    Ended,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Blank => f.write_str("Blank messages are not sent."),
            SendError::TooLong { chars } => write!(
                f,
                "Messages are at most {} characters (this one has {}).",
                thousands(MAX_MESSAGE_CHARS),
                thousands(*chars)
            ),
            SendError::NoSuchConversation => f.write_str("This conversation is no longer open."),
            SendError::Ended => {
                f.write_str("This conversation has ended: messages can no longer be sent.")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// `4123` → `"4,123"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Online users sorted as the list shows them: by name ignoring case, then id.
fn by_name(a: &User, b: &User) -> std::cmp::Ordering {
    a.name
        .to_lowercase()
        .cmp(&b.name.to_lowercase())
        .then(a.id.cmp(&b.id))
}

/// Everything one page knows: who I am, who is online, my conversations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatState {
    /// The signed-in user, once welcomed.
    pub me: Option<User>,
    /// Other online users, sorted by name (case-insensitive, then id), never me.
    pub online: Vec<User>,
    /// Conversations in the order they started (or were first seen).
    pub conversations: Vec<Conversation>,
    /// Set by `opened`: the conversation whose prompt should get focus; the
    /// view takes it.
    pub focus: Option<ConversationId>,
    /// The last error the relay sent that is not about a particular message
    /// (shown briefly).
    pub notice: Option<String>,
    /// True once a welcome was applied (so a later welcome is a reconnect).
    pub connected_once: bool,
    /// The next client message id to hand out.
    next_client_id: u64,
    /// Ended conversations a reconnect welcome left out: the relay no longer
    /// holds them for this user (closed in another tab meanwhile, or the relay
    /// restarted), so closing one is local and they are not resumed.
    unheld: BTreeSet<ConversationId>,
}

impl ChatState {
    /// An empty state whose client message ids start from `client_id_seed`.
    /// The app passes a random number, so that ids do not repeat across page
    /// loads of the same user (the relay delivers a repeated id once, SPEC C6).
    pub fn new(client_id_seed: u64) -> Self {
        ChatState {
            next_client_id: client_id_seed & CLIENT_ID_MASK,
            ..ChatState::default()
        }
    }

    fn me_id(&self) -> Option<UserId> {
        self.me.as_ref().map(|user| user.id)
    }

    fn index_of(&self, id: ConversationId) -> Option<usize> {
        self.conversations.iter().position(|c| c.id == id)
    }

    fn conversation_mut(&mut self, id: ConversationId) -> Option<&mut Conversation> {
        self.conversations.iter_mut().find(|c| c.id == id)
    }

    fn fresh_client_id(&mut self) -> ClientMsgId {
        let id = self.next_client_id;
        self.next_client_id = id.wrapping_add(1) & CLIENT_ID_MASK;
        ClientMsgId(id)
    }

    /// Removes a conversation from the page.
    fn remove(&mut self, id: ConversationId) {
        self.conversations.retain(|c| c.id != id);
        self.unheld.remove(&id);
        if self.focus == Some(id) {
            self.focus = None;
        }
    }

    /// Adds a conversation from a snapshot, or merges it into the one held.
    ///
    /// A snapshot for an id the relay had forgotten (lost, or left out of a
    /// reconnect welcome) is a new conversation that reuses the id after a
    /// relay restart: it replaces the old one.
    fn absorb(&mut self, snapshot: ConversationSnapshot) {
        let me = self.me_id();
        match self.index_of(snapshot.id) {
            Some(i)
                if self.conversations[i].ended == Some(Ended::Lost)
                    || self.unheld.contains(&snapshot.id) =>
            {
                self.remove(snapshot.id);
                self.conversations
                    .push(Conversation::from_snapshot(snapshot, me));
            }
            Some(i) => self.conversations[i].merge(snapshot, me, true),
            None => self
                .conversations
                .push(Conversation::from_snapshot(snapshot, me)),
        }
    }

    /// Applies one frame from the relay.
    pub fn apply(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Welcome {
                me,
                online,
                conversations,
                ..
            } => self.welcome(me, online, conversations),
            ServerMsg::Presence { joined, left } => self.presence(joined, left),
            ServerMsg::Started { conversation } => self.absorb(conversation),
            ServerMsg::Opened { conversation } => self.focus = Some(conversation),
            ServerMsg::Message {
                conversation,
                message,
            } => {
                let me = self.me_id();
                if let Some(c) = self.conversation_mut(conversation) {
                    c.receive(message, me);
                }
            }
            ServerMsg::Departed {
                conversation,
                user,
                reason,
            } => {
                if let Some(c) = self.conversation_mut(conversation) {
                    c.depart(user, reason);
                }
            }
            ServerMsg::Ended {
                conversation,
                ending,
            } => {
                if let Some(c) = self.conversation_mut(conversation) {
                    if c.ended != Some(Ended::By(ending)) {
                        c.end(Ended::By(ending));
                    }
                }
            }
            ServerMsg::Closed { conversation } => self.remove(conversation),
            ServerMsg::Error {
                message, client_id, ..
            } => {
                let pending = client_id.and_then(|id| {
                    self.conversations
                        .iter_mut()
                        .flat_map(|c| c.pending.iter_mut())
                        .find(|p| p.client_id == id)
                });
                match pending {
                    Some(pending) => pending.failed = Some(message),
                    // Not about a message this page still holds: show it.
                    None => self.notice = Some(message),
                }
            }
            ServerMsg::Pong { .. } => {}
        }
    }

    /// SPEC U4: a diff of the online list. The list stays sorted without
    /// being sorted again, so a diff costs little even with thousands online.
    fn presence(&mut self, joined: Vec<User>, left: Vec<UserId>) {
        let me = self.me_id();
        let listed: BTreeSet<UserId> = self.online.iter().map(|u| u.id).collect();
        let left: BTreeSet<UserId> = left.into_iter().collect();
        if !left.is_empty() {
            self.online.retain(|user| !left.contains(&user.id));
        }
        for user in joined {
            if Some(user.id) == me || listed.contains(&user.id) || left.contains(&user.id) {
                continue;
            }
            match self.online.binary_search_by(|u| by_name(u, &user)) {
                // Listed by this very diff (a repeated join): nothing to add.
                Ok(_) => {}
                Err(i) => self.online.insert(i, user),
            }
        }
    }

    /// SPEC U1, C2, R2: the whole state, on connect and on every reconnect.
    fn welcome(&mut self, me: User, online: Vec<User>, snapshots: Vec<ConversationSnapshot>) {
        if self.me_id().is_some_and(|held| held != me.id) {
            // Another user signed in on this page: nothing of the last one stays.
            self.reset();
        }
        let reconnect = self.connected_once;
        let me_id = me.id;
        self.me = Some(me);

        let mut online: Vec<User> = online.into_iter().filter(|u| u.id != me_id).collect();
        online.sort_by(by_name);
        online.dedup_by_key(|u| u.id);
        self.online = online;

        let seen: BTreeSet<ConversationId> = snapshots.iter().map(|s| s.id).collect();
        for snapshot in snapshots {
            self.absorb(snapshot);
        }
        if reconnect {
            for c in &mut self.conversations {
                if seen.contains(&c.id) {
                    continue;
                }
                match c.ended {
                    None => c.end(Ended::Lost),
                    Some(Ended::By(_)) => {
                        self.unheld.insert(c.id);
                    }
                    Some(Ended::Lost) => {}
                }
            }
        }
        self.connected_once = true;
    }

    /// The hello to send on (re)connect: the protocol version plus, for every
    /// conversation the relay may still hold, its `last_seq` (SPEC R2).
    ///
    /// Ended conversations not yet closed are resumed too: the relay still
    /// holds them, and resuming spares their history being sent again.
    pub fn hello(&self) -> ClientMsg {
        let resume = self
            .conversations
            .iter()
            .filter(|c| c.ended != Some(Ended::Lost) && !self.unheld.contains(&c.id))
            .map(|c| Resume {
                conversation: c.id,
                last_seq: c.last_seq,
            })
            .collect();
        ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            resume,
        }
    }

    /// After a welcome on a reconnect: the `send` frames for every pending
    /// message not refused, with their original client ids (SPEC R2, C6).
    /// Apply the welcome first: messages it confirms are no longer pending.
    pub fn resends(&self) -> Vec<ClientMsg> {
        self.conversations
            .iter()
            .filter(|c| c.is_live())
            .flat_map(|c| {
                c.pending
                    .iter()
                    .filter(|p| p.failed.is_none())
                    .map(move |p| ClientMsg::Send {
                        conversation: c.id,
                        client_id: p.client_id,
                        text: p.text.clone(),
                    })
            })
            .collect()
    }

    /// Sends a message (SPEC C4, C6): refused if the conversation is not open
    /// and live, if the text is blank, or if it has more than
    /// [`MAX_MESSAGE_CHARS`] characters. Otherwise records it as pending
    /// under a fresh client id and returns the `send` frame. The text is
    /// sent exactly as typed.
    pub fn send(
        &mut self,
        conversation: ConversationId,
        text: &str,
    ) -> Result<ClientMsg, SendError> {
        let index = self
            .index_of(conversation)
            .ok_or(SendError::NoSuchConversation)?;
        if !self.conversations[index].is_live() {
            return Err(SendError::Ended);
        }
        if text.trim().is_empty() {
            return Err(SendError::Blank);
        }
        let chars = text.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(SendError::TooLong { chars });
        }
        let client_id = self.fresh_client_id();
        self.conversations[index].pending.push(Pending {
            client_id,
            text: text.to_string(),
            failed: None,
        });
        Ok(ClientMsg::Send {
            conversation,
            client_id,
            text: text.to_string(),
        })
    }

    /// Re-sends a pending message (clearing its failure) with the same client
    /// id. `None` if there is no such message or its conversation has ended.
    pub fn retry(
        &mut self,
        conversation: ConversationId,
        client_id: ClientMsgId,
    ) -> Option<ClientMsg> {
        let c = self.conversation_mut(conversation)?;
        if !c.is_live() {
            return None;
        }
        let pending = c.pending.iter_mut().find(|p| p.client_id == client_id)?;
        pending.failed = None;
        Some(ClientMsg::Send {
            conversation,
            client_id,
            text: pending.text.clone(),
        })
    }

    /// Drops a pending message.
    pub fn discard(&mut self, conversation: ConversationId, client_id: ClientMsgId) {
        if let Some(c) = self.conversation_mut(conversation) {
            c.pending.retain(|p| p.client_id != client_id);
        }
    }

    /// The `open` frame for these users (SPEC C1, C10): sorted, without
    /// repeats and without me (the relay adds the sender).
    pub fn open(&self, with: Vec<UserId>) -> ClientMsg {
        let me = self.me_id();
        let mut with: Vec<UserId> = with.into_iter().filter(|id| Some(*id) != me).collect();
        with.sort();
        with.dedup();
        ClientMsg::Open { with }
    }

    /// The `leave` frame (SPEC C8); the conversation goes when the relay
    /// answers `closed`. For one the relay no longer holds (lost, or left out
    /// of a reconnect welcome) there is nothing to send: it is removed here
    /// and `None` returned. `None` too for an unknown id.
    pub fn close(&mut self, conversation: ConversationId) -> Option<ClientMsg> {
        let c = self.conversation(conversation)?;
        if c.ended == Some(Ended::Lost) || self.unheld.contains(&conversation) {
            self.remove(conversation);
            return None;
        }
        Some(ClientMsg::Leave { conversation })
    }

    /// The conversation with this id, if the page holds it.
    pub fn conversation(&self, id: ConversationId) -> Option<&Conversation> {
        self.conversations.iter().find(|c| c.id == id)
    }

    /// The live dialog with exactly this user, if any, so the UI can focus it
    /// instead of asking the relay (SPEC C1).
    pub fn dialog_with(&self, user: UserId) -> Option<ConversationId> {
        let me = self.me_id()?;
        if user == me {
            return None;
        }
        self.conversations
            .iter()
            .find(|c| {
                c.is_live()
                    && c.participants.len() == 2
                    && c.participants.contains(&me)
                    && c.participants.contains(&user)
            })
            .map(|c| c.id)
    }

    /// Forgets everything (log out). Client ids keep counting, so none is
    /// reused by this page.
    pub fn reset(&mut self) {
        *self = ChatState {
            next_client_id: self.next_client_id,
            ..ChatState::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorKind;

    const ME: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const CAROL: UserId = UserId(3);
    const DAVE: UserId = UserId(4);
    const C: ConversationId = ConversationId(10);
    const G: ConversationId = ConversationId(20);

    fn user(id: UserId) -> User {
        let name = match id.0 {
            1 => "alice",
            2 => "Bob",
            3 => "carol",
            4 => "dave",
            _ => "zed",
        };
        User {
            id,
            name: name.into(),
            color: "#123456".into(),
        }
    }

    fn message(seq: u64, author: UserId, client_id: u64) -> ChatMessage {
        ChatMessage {
            seq: Seq(seq),
            author,
            time: 1_700_000_000_000 + seq,
            text: format!("message {seq}"),
            client_id: ClientMsgId(client_id),
        }
    }

    fn snapshot(id: ConversationId, who: &[UserId], seqs: &[u64]) -> ConversationSnapshot {
        ConversationSnapshot {
            id,
            participants: who.iter().map(|u| user(*u)).collect(),
            messages: seqs.iter().map(|s| message(*s, BOB, 900 + s)).collect(),
            gap: false,
            ended: None,
        }
    }

    fn welcome(online: &[UserId], conversations: Vec<ConversationSnapshot>) -> ServerMsg {
        ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(ME),
            online: online.iter().map(|u| user(*u)).collect(),
            conversations,
        }
    }

    /// Welcomed, online with Bob and Carol, in a dialog with Bob holding seq 1..=2.
    fn connected() -> ChatState {
        let mut state = ChatState::new(100);
        state.apply(welcome(
            &[BOB, CAROL],
            vec![snapshot(C, &[ME, BOB], &[1, 2])],
        ));
        state
    }

    fn dialog(state: &ChatState) -> &Conversation {
        state.conversation(C).expect("the dialog is held")
    }

    fn notices(c: &Conversation) -> Vec<&str> {
        c.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Notice(n) => Some(n.as_str()),
                Entry::Message(_) => None,
            })
            .collect()
    }

    fn seqs(c: &Conversation) -> Vec<u64> {
        c.messages().map(|m| m.seq.0).collect()
    }

    fn sent_id(frame: &ClientMsg) -> ClientMsgId {
        match frame {
            ClientMsg::Send { client_id, .. } => *client_id,
            other => panic!("not a send frame: {other:?}"),
        }
    }

    fn echo(frame: &ClientMsg, seq: u64) -> ServerMsg {
        let ClientMsg::Send {
            conversation,
            client_id,
            text,
        } = frame.clone()
        else {
            panic!("not a send frame: {frame:?}");
        };
        ServerMsg::Message {
            conversation,
            message: ChatMessage {
                seq: Seq(seq),
                author: ME,
                time: 1,
                text,
                client_id,
            },
        }
    }

    #[test]
    fn u1_welcome_sets_me_online_and_conversations_never_listing_me() {
        let mut state = ChatState::new(0);
        assert!(!state.connected_once);
        state.apply(welcome(
            &[CAROL, ME, BOB, CAROL],
            vec![snapshot(C, &[BOB, ME], &[1, 2, 3])],
        ));
        assert_eq!(state.me, Some(user(ME)));
        let online: Vec<UserId> = state.online.iter().map(|u| u.id).collect();
        assert_eq!(online, [BOB, CAROL], "sorted by name ignoring case, no me");
        assert!(state.connected_once);
        let c = dialog(&state);
        assert_eq!(c.members, [user(ME), user(BOB)], "members sorted by id");
        assert_eq!(c.participants, [ME, BOB]);
        assert_eq!(seqs(c), [1, 2, 3]);
        assert_eq!(c.last_seq, Seq(3));
        assert!(c.is_live() && c.pending.is_empty() && notices(c).is_empty());
        assert_eq!(state.focus, None);
        assert_eq!(state.notice, None);
    }

    #[test]
    fn u4_presence_diffs_are_idempotent_and_keep_the_list_sorted() {
        let mut state = connected();
        let presence = |joined: &[UserId], left: &[UserId]| ServerMsg::Presence {
            joined: joined.iter().map(|u| user(*u)).collect(),
            left: left.to_vec(),
        };
        let ids = |s: &ChatState| s.online.iter().map(|u| u.id).collect::<Vec<_>>();

        state.apply(presence(&[DAVE, ME, UserId(9)], &[]));
        assert_eq!(ids(&state), [BOB, CAROL, DAVE, UserId(9)], "never me");
        let before = state.clone();
        state.apply(presence(&[DAVE, BOB], &[]));
        assert_eq!(state, before, "a join for someone listed changes nothing");

        state.apply(presence(&[], &[CAROL]));
        assert_eq!(ids(&state), [BOB, DAVE, UserId(9)]);
        let before = state.clone();
        state.apply(presence(&[], &[CAROL, UserId(77)]));
        assert_eq!(state, before, "a leave for someone absent changes nothing");

        state.apply(presence(&[CAROL, CAROL], &[]));
        assert_eq!(
            ids(&state),
            [BOB, CAROL, DAVE, UserId(9)],
            "a repeat within a diff"
        );
        state.apply(presence(&[], &[CAROL]));

        // Same name in another case: by name ignoring case, then by id.
        let mut bob2 = user(BOB);
        bob2.id = UserId(0);
        bob2.name = "bob".into();
        state.apply(ServerMsg::Presence {
            joined: vec![bob2],
            left: vec![],
        });
        assert_eq!(ids(&state), [UserId(0), BOB, DAVE, UserId(9)]);
    }

    #[test]
    fn c1_c2_started_adds_and_opened_focuses() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[]),
        });
        let order: Vec<ConversationId> = state.conversations.iter().map(|c| c.id).collect();
        assert_eq!(order, [C, G], "in the order they started");
        assert_eq!(state.focus, None, "started alone does not take focus");

        state.apply(ServerMsg::Opened { conversation: G });
        assert_eq!(state.focus, Some(G));

        // Started again for a known one (another tab's open): merged, not doubled.
        state.apply(ServerMsg::Started {
            conversation: snapshot(C, &[ME, BOB], &[1, 2, 3]),
        });
        assert_eq!(state.conversations.len(), 2);
        assert_eq!(seqs(dialog(&state)), [1, 2, 3]);
    }

    #[test]
    fn c5_message_appends_in_order_and_a_repeated_seq_is_ignored() {
        let mut state = connected();
        let frame = ServerMsg::Message {
            conversation: C,
            message: message(3, BOB, 5),
        };
        state.apply(frame.clone());
        state.apply(frame);
        state.apply(ServerMsg::Message {
            conversation: C,
            message: message(2, BOB, 6),
        });
        assert_eq!(seqs(dialog(&state)), [1, 2, 3]);
        assert_eq!(dialog(&state).last_seq, Seq(3));

        // A jump is still appended: the gap is the relay's to report.
        state.apply(ServerMsg::Message {
            conversation: C,
            message: message(7, BOB, 7),
        });
        assert_eq!(seqs(dialog(&state)), [1, 2, 3, 7]);

        // A message for a conversation not held changes nothing.
        let before = state.clone();
        state.apply(ServerMsg::Message {
            conversation: ConversationId(99),
            message: message(1, BOB, 8),
        });
        assert_eq!(state, before);
    }

    #[test]
    fn c6_pending_until_the_relay_confirms_it() {
        let mut state = connected();
        let frame = state.send(C, "hello <b>\n").expect("valid");
        let id = sent_id(&frame);
        assert_eq!(
            frame,
            ClientMsg::Send {
                conversation: C,
                client_id: id,
                text: "hello <b>\n".into()
            },
            "sent exactly as typed"
        );
        assert_eq!(
            dialog(&state).pending,
            [Pending {
                client_id: id,
                text: "hello <b>\n".into(),
                failed: None
            }]
        );

        // Another tab of mine sends: its echo confirms nothing here.
        state.apply(ServerMsg::Message {
            conversation: C,
            message: ChatMessage {
                author: ME,
                ..message(3, ME, id.0.wrapping_add(1000))
            },
        });
        assert_eq!(dialog(&state).pending.len(), 1);

        state.apply(echo(&frame, 4));
        state.apply(echo(&frame, 4));
        assert!(dialog(&state).pending.is_empty());
        assert_eq!(seqs(dialog(&state)), [1, 2, 3, 4], "never shown twice");
    }

    #[test]
    fn r2_hello_resumes_from_last_seq_and_resends_keep_client_ids() {
        let mut state = connected();
        assert_eq!(
            ChatState::new(0).hello(),
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume: vec![]
            }
        );
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[1, 2, 3, 4, 5]),
        });
        let first = state.send(C, "one").expect("valid");
        let second = state.send(G, "two").expect("valid");
        let refused = state.send(C, "three").expect("valid");
        state.apply(ServerMsg::Error {
            kind: ErrorKind::SlowDown,
            message: "slow down".into(),
            client_id: Some(sent_id(&refused)),
        });
        assert_eq!(
            state.hello(),
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume: vec![
                    Resume {
                        conversation: C,
                        last_seq: Seq(2)
                    },
                    Resume {
                        conversation: G,
                        last_seq: Seq(5)
                    },
                ],
            }
        );

        // Reconnect: the relay had already accepted `first` (seq 3).
        state.apply(welcome(
            &[BOB, CAROL],
            vec![
                ConversationSnapshot {
                    messages: vec![echo_message(&first, 3)],
                    ..snapshot(C, &[ME, BOB], &[])
                },
                snapshot(G, &[ME, BOB, CAROL], &[]),
            ],
        ));
        assert_eq!(
            state.resends(),
            [second],
            "same client id, refused ones kept back"
        );
        assert_eq!(seqs(dialog(&state)), [1, 2, 3]);
    }

    fn echo_message(frame: &ClientMsg, seq: u64) -> ChatMessage {
        match echo(frame, seq) {
            ServerMsg::Message { message, .. } => message,
            _ => unreachable!(),
        }
    }

    #[test]
    fn r2_resume_welcome_merges_without_duplicates_and_a_gap_is_announced() {
        let mut state = connected();
        // The relay repeats seq 2 and adds 3 and 4.
        state.apply(welcome(&[BOB], vec![snapshot(C, &[ME, BOB], &[2, 3, 4])]));
        assert_eq!(seqs(dialog(&state)), [1, 2, 3, 4]);
        assert!(notices(dialog(&state)).is_empty());
        assert_eq!(state.online, [user(BOB)], "online replaced by the welcome");

        // History no longer holds 5..=9: the page says so, before the rest.
        state.apply(welcome(
            &[BOB],
            vec![ConversationSnapshot {
                gap: true,
                ..snapshot(C, &[ME, BOB], &[10, 11])
            }],
        ));
        let c = dialog(&state);
        assert_eq!(seqs(c), [1, 2, 3, 4, 10, 11]);
        assert_eq!(c.entries[4], Entry::Notice(GAP_NOTICE.into()));
        assert_eq!(c.last_seq, Seq(11));

        // A hole the relay did not flag is announced all the same.
        state.apply(welcome(&[BOB], vec![snapshot(C, &[ME, BOB], &[15])]));
        assert_eq!(notices(dialog(&state)), [GAP_NOTICE, GAP_NOTICE]);
        assert!(dialog(&state).is_live());
    }

    #[test]
    fn r2_r3_relay_restart_loses_live_conversations_and_keeps_their_messages() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: ConversationSnapshot {
                ended: Some(Ending {
                    user: CAROL,
                    reason: Departure::Left,
                }),
                ..snapshot(G, &[ME, CAROL], &[1])
            },
        });
        let pending = state.send(C, "lost?").expect("valid");
        state.apply(welcome(&[BOB], vec![]));

        let c = dialog(&state);
        assert_eq!(c.ended, Some(Ended::Lost));
        assert_eq!(seqs(c), [1, 2], "messages kept");
        assert_eq!(notices(c), [LOST_NOTICE]);
        assert_eq!(c.pending[0].failed.as_deref(), Some(NOT_SENT_ENDED));
        assert!(state.resends().is_empty());
        assert_eq!(
            state.hello(),
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume: vec![]
            },
            "nothing to resume that the relay forgot"
        );
        assert_eq!(state.send(C, "again"), Err(SendError::Ended));
        assert_eq!(state.retry(C, sent_id(&pending)), None);
        let ended = state.conversation(G).expect("ended ones stay");
        assert_eq!(notices(ended), ["carol left"], "no second notice");

        // A second welcome does not repeat the notice.
        state.apply(welcome(&[BOB], vec![]));
        assert_eq!(notices(dialog(&state)), [LOST_NOTICE]);

        // The restarted relay reuses the id: that is a new conversation.
        state.apply(ServerMsg::Started {
            conversation: snapshot(C, &[ME, DAVE], &[1]),
        });
        let c = dialog(&state);
        assert!(c.is_live());
        assert_eq!(c.participants, [ME, DAVE]);
        assert_eq!(seqs(c), [1]);
        assert!(notices(c).is_empty() && c.pending.is_empty());

        // Closing what the relay no longer holds is local.
        assert_eq!(state.close(G), None);
        assert!(state.conversation(G).is_none());
    }

    #[test]
    fn c8_closing_lost_conversation_is_local_and_a_live_one_asks_the_relay() {
        let mut state = connected();
        assert_eq!(state.close(C), Some(ClientMsg::Leave { conversation: C }));
        assert!(state.conversation(C).is_some(), "goes on `closed`");
        state.apply(welcome(&[BOB], vec![]));
        state.apply(ServerMsg::Opened { conversation: C });
        assert_eq!(state.close(C), None);
        assert!(state.conversations.is_empty());
        assert_eq!(state.focus, None);
        assert_eq!(state.close(ConversationId(99)), None);
    }

    #[test]
    fn c7_dialog_ends_when_the_other_goes_offline() {
        let mut state = connected();
        let ending = Ending {
            user: BOB,
            reason: Departure::WentOffline,
        };
        let frame = ServerMsg::Ended {
            conversation: C,
            ending,
        };
        state.apply(frame.clone());
        state.apply(frame);
        let c = dialog(&state);
        assert_eq!(c.ended, Some(Ended::By(ending)));
        assert!(!c.is_live());
        assert_eq!(notices(c), ["Bob went offline"], "announced once");
        assert_eq!(c.participants, [ME]);
        assert_eq!(c.title(ME), "Conversation with Bob", "keeps its name");
        assert_eq!(state.dialog_with(BOB), None);
        assert_eq!(state.send(C, "hi"), Err(SendError::Ended));

        // A later welcome carrying the same ending adds nothing.
        state.apply(welcome(
            &[],
            vec![ConversationSnapshot {
                ended: Some(ending),
                ..snapshot(C, &[ME, BOB], &[1, 2])
            }],
        ));
        let c = dialog(&state);
        assert_eq!(notices(c), ["Bob went offline"]);
        assert_eq!(c.participants, [ME]);
        assert_eq!(state.close(C), Some(ClientMsg::Leave { conversation: C }));
    }

    #[test]
    fn c7_ended_marks_unconfirmed_messages_failed() {
        let mut state = connected();
        let frame = state.send(C, "are you there?").expect("valid");
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::Left,
            },
        });
        let c = dialog(&state);
        assert_eq!(notices(c), ["Bob left"]);
        assert_eq!(
            c.pending,
            [Pending {
                client_id: sent_id(&frame),
                text: "are you there?".into(),
                failed: Some(NOT_SENT_ENDED.into())
            }]
        );
        assert!(state.resends().is_empty());
        state.discard(C, sent_id(&frame));
        assert!(dialog(&state).pending.is_empty());
    }

    #[test]
    fn c10_group_departures_are_announced_by_name_and_end_it_at_one() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL, DAVE], &[]),
        });
        let group = |s: &ChatState| s.conversation(G).cloned().expect("held");
        assert_eq!(
            group(&state).title(ME),
            "Conversation with Bob, carol, dave"
        );

        let departed = ServerMsg::Departed {
            conversation: G,
            user: CAROL,
            reason: Departure::Left,
        };
        state.apply(departed.clone());
        state.apply(departed);
        state.apply(ServerMsg::Departed {
            conversation: G,
            user: DAVE,
            reason: Departure::WentOffline,
        });
        let g = group(&state);
        assert_eq!(notices(&g), ["carol left", "dave went offline"]);
        assert_eq!(g.participants, [ME, BOB]);
        assert!(g.is_live());
        assert_eq!(g.title(ME), "Conversation with Bob");
        assert_eq!(
            g.member(CAROL),
            Some(&user(CAROL)),
            "names stay for old messages"
        );

        state.apply(ServerMsg::Ended {
            conversation: G,
            ending: Ending {
                user: BOB,
                reason: Departure::Left,
            },
        });
        let g = group(&state);
        assert_eq!(notices(&g), ["carol left", "dave went offline", "Bob left"]);
        assert_eq!(g.title(ME), "Conversation with Bob");
    }

    #[test]
    fn c8_closed_removes_the_conversation_and_its_focus() {
        let mut state = connected();
        state.apply(ServerMsg::Opened { conversation: C });
        state.apply(ServerMsg::Closed { conversation: C });
        assert!(state.conversations.is_empty());
        assert_eq!(state.focus, None);

        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[]),
        });
        state.apply(ServerMsg::Opened { conversation: G });
        state.apply(ServerMsg::Closed { conversation: C });
        assert_eq!(state.focus, Some(G), "focus elsewhere stays");
        assert_eq!(state.conversations.len(), 1);
    }

    #[test]
    fn l4_refused_message_keeps_its_text_and_retry_resends_the_same_id() {
        let mut state = connected();
        let frame = state.send(C, "too fast").expect("valid");
        let id = sent_id(&frame);
        state.apply(ServerMsg::Error {
            kind: ErrorKind::SlowDown,
            message: "slow down".into(),
            client_id: Some(id),
        });
        let pending = &dialog(&state).pending[0];
        assert_eq!(pending.failed.as_deref(), Some("slow down"));
        assert_eq!(pending.text, "too fast");
        assert_eq!(state.notice, None);

        assert_eq!(state.retry(C, id), Some(frame.clone()));
        assert_eq!(dialog(&state).pending[0].failed, None);
        assert_eq!(state.retry(C, ClientMsgId(12345)), None);
        assert_eq!(state.retry(ConversationId(99), id), None);

        state.apply(echo(&frame, 3));
        assert!(dialog(&state).pending.is_empty());
    }

    #[test]
    fn l3_error_without_a_message_becomes_the_notice() {
        let mut state = connected();
        state.apply(ServerMsg::error(
            ErrorKind::UserOffline,
            "Dave is not online",
        ));
        assert_eq!(state.notice.as_deref(), Some("Dave is not online"));
        // An error about a message this page no longer holds is shown too.
        state.apply(ServerMsg::Error {
            kind: ErrorKind::SlowDown,
            message: "slow down".into(),
            client_id: Some(ClientMsgId(404)),
        });
        assert_eq!(state.notice.as_deref(), Some("slow down"));
        let before = state.clone();
        state.apply(ServerMsg::Pong { nonce: 1 });
        assert_eq!(state, before);
    }

    #[test]
    fn c4_send_refuses_blank_and_over_4000_characters() {
        let mut state = connected();
        assert_eq!(state.send(C, ""), Err(SendError::Blank));
        assert_eq!(state.send(C, " \n\t "), Err(SendError::Blank));
        assert!(dialog(&state).pending.is_empty());

        let max = "é".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(max.len(), 2 * MAX_MESSAGE_CHARS, "bytes are not characters");
        assert!(state.send(C, &max).is_ok());
        let over = format!("{max}é");
        let err = state.send(C, &over).expect_err("too long");
        assert_eq!(err, SendError::TooLong { chars: 4_001 });
        assert_eq!(
            err.to_string(),
            "Messages are at most 4,000 characters (this one has 4,001)."
        );
        assert_eq!(
            SendError::TooLong { chars: 1_234_567 }.to_string(),
            "Messages are at most 4,000 characters (this one has 1,234,567)."
        );
        assert_eq!(
            state.send(ConversationId(99), "hi"),
            Err(SendError::NoSuchConversation)
        );
        assert_eq!(dialog(&state).pending.len(), 1);
        for e in [
            SendError::Blank,
            SendError::NoSuchConversation,
            SendError::Ended,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn c3_titles_name_the_others_sorted_ignoring_case() {
        let mut state = connected();
        assert_eq!(dialog(&state).title(ME), "Conversation with Bob");
        let mut bob = user(BOB);
        bob.name = "bob".into();
        state.apply(ServerMsg::Started {
            conversation: ConversationSnapshot {
                participants: vec![user(CAROL), user(ME), bob],
                ..snapshot(G, &[], &[])
            },
        });
        let g = state.conversation(G).expect("held");
        assert_eq!(g.title(ME), "Conversation with bob, carol");
        assert_eq!(g.others(ME), ["bob", "carol"]);
        assert_eq!(g.participants, [ME, BOB, CAROL], "sorted by id");

        let mut names = state.conversation(G).cloned().expect("held");
        names.members[2].name = "Carol".into();
        assert_eq!(names.title(ME), "Conversation with bob, Carol");
    }

    #[test]
    fn c1_dialog_with_finds_only_a_live_two_person_conversation() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[]),
        });
        assert_eq!(state.dialog_with(BOB), Some(C));
        assert_eq!(state.dialog_with(CAROL), None, "a group is not a dialog");
        assert_eq!(state.dialog_with(ME), None);
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::WentOffline,
            },
        });
        assert_eq!(state.dialog_with(BOB), None, "an ended dialog is not live");
        assert_eq!(ChatState::new(0).dialog_with(BOB), None);
        assert_eq!(
            state.open(vec![CAROL, ME, BOB, CAROL]),
            ClientMsg::Open {
                with: vec![BOB, CAROL]
            }
        );
    }

    #[test]
    fn c6_client_ids_never_repeat_and_follow_the_seed() {
        let mut state = connected();
        let mut ids = BTreeSet::new();
        for i in 0..50 {
            let frame = state.send(C, &format!("m{i}")).expect("valid");
            assert!(ids.insert(sent_id(&frame)), "repeated id");
        }
        state.reset();
        state.apply(welcome(&[BOB], vec![snapshot(C, &[ME, BOB], &[])]));
        let after_reset = sent_id(&state.send(C, "again").expect("valid"));
        assert!(ids.insert(after_reset), "log out does not restart the ids");

        let first = |seed| {
            let mut s = ChatState::new(seed);
            s.apply(welcome(&[BOB], vec![snapshot(C, &[ME, BOB], &[])]));
            sent_id(&s.send(C, "x").expect("valid"))
        };
        assert_ne!(first(1), first(2));
        assert_ne!(first(0x1234_5678_9abc), first(0xfedc_ba98_7654));
        // Any seed, even the largest, gives ids exact as JSON numbers.
        assert!(first(u64::MAX).0 < 1 << 53);
    }

    #[test]
    fn s5_reset_forgets_everything_and_another_user_starts_afresh() {
        let mut state = connected();
        state.reset();
        assert_eq!(state.me, None);
        assert!(state.online.is_empty() && state.conversations.is_empty());
        assert!(!state.connected_once);

        let mut state = connected();
        state.apply(ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(DAVE),
            online: vec![user(ME)],
            conversations: vec![],
        });
        assert_eq!(state.me, Some(user(DAVE)));
        assert!(state.conversations.is_empty(), "not lost: never Dave's");
        assert_eq!(state.online, [user(ME)]);
    }

    #[test]
    fn l7_frames_out_of_place_change_nothing_and_never_panic() {
        let mut state = ChatState::new(7);
        let before = state.clone();
        let unknown = ConversationId(42);
        for frame in [
            ServerMsg::Message {
                conversation: unknown,
                message: message(1, BOB, 1),
            },
            ServerMsg::Departed {
                conversation: unknown,
                user: BOB,
                reason: Departure::Left,
            },
            ServerMsg::Ended {
                conversation: unknown,
                ending: Ending {
                    user: BOB,
                    reason: Departure::Left,
                },
            },
            ServerMsg::Closed {
                conversation: unknown,
            },
            ServerMsg::Presence {
                joined: vec![],
                left: vec![BOB],
            },
        ] {
            state.apply(frame);
        }
        assert_eq!(state, before);
        // A snapshot naming nobody, or a departure of a stranger.
        state.apply(ServerMsg::Started {
            conversation: snapshot(unknown, &[], &[3, 1, 3]),
        });
        let c = state.conversation(unknown).expect("held");
        assert_eq!(seqs(c), [3], "out of order and repeated seqs are dropped");
        assert_eq!(c.title(ME), "Conversation with ");
        state.apply(ServerMsg::Ended {
            conversation: unknown,
            ending: Ending {
                user: UserId(500),
                reason: Departure::WentOffline,
            },
        });
        assert_eq!(
            notices(state.conversation(unknown).expect("held")),
            ["Someone went offline"]
        );
        assert_eq!(state.send(unknown, "x"), Err(SendError::Ended));
    }
}
