//! The client-side conversation model: everything the page shows, as plain
//! data, and every rule for changing it.
//!
//! [`ChatState::apply`] takes the relay's frames one at a time; the user's
//! intents ([`ChatState::send`], [`ChatState::retry`], [`ChatState::open`],
//! [`ChatState::close`], [`ChatState::typing`]) and the page's events
//! ([`ChatState::marks_update`]) update the state and return the [`ClientMsg`]
//! to send. Nothing here touches a socket, a clock or the DOM (the time is
//! passed in), so the rules of presence, conversations, reconnection, typing,
//! ticks and unread counts (SPEC U, C, R, B) are pure functions tested
//! natively with `cargo test`. The Yew store in `frontend/` only adapts
//! this state to a reducer; it holds no rules of its own.
//!
//! No frame, however odd (a message for an unknown conversation, a leave for
//! someone absent, a duplicate), makes this code panic (SPEC L7): what cannot
//! be applied is ignored.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::protocol::{
    Activity, ChatMessage, ClientMsg, ClientMsgId, ConversationId, ConversationSnapshot, Departure,
    Ending, Marks, Resume, Seq, ServerMsg, User, UserActivity, UserId, MAX_MESSAGE_CHARS,
    PROTOCOL_VERSION,
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

/// While the user types, a `typing` frame goes out at most this often per
/// conversation, in milliseconds (SPEC B1). The relay expires the state 5 s
/// after the last one, so a typist is announced without gaps.
pub const TYPING_EVERY_MS: f64 = 2_000.0;

/// The tick shown on one of my messages in a dialog (SPEC B2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tick {
    /// The relay has it; no tab of the recipient has received it yet.
    Sent,
    /// A tab of the recipient received it.
    Delivered,
    /// It was shown in a focused, visible tab of the recipient.
    Read,
}

impl Tick {
    /// The accessible name: "Sent", "Delivered" or "Read".
    pub fn label(self) -> &'static str {
        match self {
            Tick::Sent => "Sent",
            Tick::Delivered => "Delivered",
            Tick::Read => "Read",
        }
    }
}

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
    /// A message stamped by the relay. Shared, not copied: a page that
    /// re-renders a conversation of a thousand messages clones the list, and
    /// tells an unchanged message from a new one by pointer.
    Message(Arc<ChatMessage>),
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
    /// Who is typing now, in the order they started, never me (SPEC B1).
    /// Empty once it has ended.
    pub typing: Vec<UserId>,
    /// Each participant's delivery and read marks, one per user, sorted by
    /// user; mine included (my other tabs' reads). They never go back
    /// (SPEC B2, B3).
    pub marks: Vec<Marks>,
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
            typing: Vec::new(),
            marks: Vec::new(),
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
        sort_by(&mut ids, Ord::cmp);
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
        sort_by(&mut names, |a, b| fold_case(a, b).then(a.cmp(b)));
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
            Entry::Message(message) => Some(&**message),
            Entry::Notice(_) => None,
        })
    }

    /// "Bob is typing", "Bob and Carol are typing", "Bob, Carol and Dave
    /// are typing": the typists in the order they started (SPEC B1). `None`
    /// if nobody (but me) is typing.
    pub fn typing_line(&self, me: UserId) -> Option<String> {
        let names: Vec<String> = self
            .typing
            .iter()
            .filter(|id| **id != me)
            .map(|id| self.name_of(*id))
            .collect();
        match names.as_slice() {
            [] => None,
            [one] => Some(format!("{one} is typing")),
            [init @ .., last] => Some(format!("{} and {last} are typing", init.join(", "))),
        }
    }

    /// A user's marks here, if they have any.
    pub fn marks_of(&self, user: UserId) -> Option<Marks> {
        self.marks.iter().find(|m| m.user == user).copied()
    }

    /// How many messages by others come after my read mark (SPEC B3).
    pub fn unread(&self, me: UserId) -> usize {
        let read = self.marks_of(me).map_or(Seq(0), |m| m.read);
        self.messages()
            .filter(|m| m.author != me && m.seq > read)
            .count()
    }

    /// The tick on a message (SPEC B2): only on my own messages in a dialog
    /// (a conversation of exactly two members); `Read` once the other's
    /// read mark reaches it, `Delivered` once their delivered mark does,
    /// `Sent` before. `None` in groups and on others' messages.
    pub fn tick(&self, message: &ChatMessage, me: UserId) -> Option<Tick> {
        if message.author != me || self.members.len() != 2 || self.member(me).is_none() {
            return None;
        }
        let other = self.members.iter().find(|user| user.id != me)?;
        let marks = self.marks_of(other.id);
        Some(match marks {
            Some(m) if m.read >= message.seq => Tick::Read,
            Some(m) if m.delivered >= message.seq => Tick::Delivered,
            _ => Tick::Sent,
        })
    }

    /// The conversation as text (SPEC B5): one line per message,
    /// `"{time} {author}: {text}"`, each line ending in a newline. So that a
    /// line is always one message and nothing is lost, the text's
    /// backslashes are doubled and its line breaks written `\n` (and `\r`).
    /// Notices are left out; unknown authors are "Someone".
    pub fn transcript(&self, format_time: impl Fn(u64) -> String) -> String {
        let mut out = String::new();
        for message in self.messages() {
            out.push_str(&format_time(message.time));
            out.push(' ');
            out.push_str(&self.name_of(message.author));
            out.push_str(": ");
            for ch in message.text.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    _ => out.push(ch),
                }
            }
            out.push('\n');
        }
        out
    }

    /// The name for the downloaded transcript: `chat-with-bob-carol.txt`,
    /// from [`Conversation::others`] (so an ended dialog keeps its partner),
    /// lowercased, every character but `a-z 0-9 _ . -` replaced by `-`.
    pub fn transcript_file_name(&self, me: UserId) -> String {
        let names: Vec<String> = self
            .others(me)
            .iter()
            .map(|name| {
                name.to_ascii_lowercase()
                    .chars()
                    .map(|ch| match ch {
                        'a'..='z' | '0'..='9' | '_' | '.' | '-' => ch,
                        _ => '-',
                    })
                    .collect()
            })
            .collect();
        if names.is_empty() {
            "chat.txt".to_string()
        } else {
            format!("chat-with-{}.txt", names.join("-"))
        }
    }

    /// Folds in someone's marks, field by field, never going back.
    fn merge_marks(&mut self, marks: Marks) {
        match self.marks.binary_search_by_key(&marks.user, |m| m.user) {
            Ok(i) => {
                let held = &mut self.marks[i];
                held.delivered = held.delivered.max(marks.delivered);
                held.read = held.read.max(marks.read);
            }
            Err(i) => self.marks.insert(i, marks),
        }
    }

    /// Someone started or stopped typing (SPEC B1). Only participants of a
    /// live conversation type; I am never listed.
    fn set_typing(&mut self, user: UserId, active: bool, me: Option<UserId>) {
        if !active {
            self.typing.retain(|id| *id != user);
        } else if self.is_live()
            && Some(user) != me
            && self.participants.contains(&user)
            && !self.typing.contains(&user)
        {
            self.typing.push(user);
        }
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
        for marks in snapshot.marks {
            self.merge_marks(marks);
        }
        let mut participants = Vec::with_capacity(snapshot.participants.len());
        for user in snapshot.participants {
            participants.push(user.id);
            self.add_member(user);
        }
        sort_by(&mut participants, Ord::cmp);
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
        // Sending ends typing (SPEC B1).
        self.typing.retain(|id| *id != message.author);
        self.last_seq = message.seq;
        self.entries.push(Entry::Message(Arc::new(message)));
    }

    /// Someone is no longer in it: announced by name, once.
    fn depart(&mut self, user: UserId, reason: Departure) {
        self.typing.retain(|id| *id != user);
        if !self.participants.contains(&user) {
            return;
        }
        self.participants.retain(|id| *id != user);
        let notice = departure_notice(&self.name_of(user), reason);
        self.entries.push(Entry::Notice(notice));
    }

    /// The plain words for why it ended (SPEC C7, C8): "NAME left", "NAME
    /// went offline" or [`LOST_NOTICE`]; its notice, and the page's note.
    pub fn ended_note(&self, how: Ended) -> String {
        match how {
            Ended::By(ending) => departure_notice(&self.name_of(ending.user), ending.reason),
            Ended::Lost => LOST_NOTICE.to_string(),
        }
    }

    /// It is no longer live: say why, and fail what was not confirmed.
    fn end(&mut self, how: Ended) {
        self.ended = Some(how);
        self.typing.clear();
        if let Ended::By(ending) = how {
            self.participants.retain(|id| *id != ending.user);
        }
        self.entries.push(Entry::Notice(self.ended_note(how)));
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
fn by_name(a: &User, b: &User) -> Ordering {
    fold_case(&a.name, &b.name).then(a.id.cmp(&b.id))
}

/// Compares names ignoring case. Names are ASCII (SPEC S1), so ASCII case
/// folding orders them as the relay does, without allocating.
fn fold_case(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|b| b.to_ascii_lowercase())
        .cmp(b.bytes().map(|b| b.to_ascii_lowercase()))
}

/// A stable insertion sort. The lists the page sorts are short (the
/// participants of one conversation) or arrive already sorted (the online
/// list in a welcome), where it takes one comparison per item; it is a
/// fraction of the code of the standard library's sort in the browser app.
fn sort_by<T>(items: &mut [T], compare: impl Fn(&T, &T) -> Ordering) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && compare(&items[j - 1], &items[j]) == Ordering::Greater {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// A small map keyed by conversation. A user has at most a hundred live
/// conversations (SPEC L5): a list is quick enough, and lighter in the
/// browser app than a hash map.
#[derive(Debug, Clone, PartialEq)]
struct PerConversation<T>(Vec<(ConversationId, T)>);

impl<T> Default for PerConversation<T> {
    fn default() -> Self {
        PerConversation(Vec::new())
    }
}

impl<T> PerConversation<T> {
    fn get(&self, id: ConversationId) -> Option<&T> {
        self.0.iter().find(|(held, _)| *held == id).map(|(_, v)| v)
    }

    fn insert(&mut self, id: ConversationId, value: T) {
        match self.0.iter_mut().find(|(held, _)| *held == id) {
            Some((_, held)) => *held = value,
            None => self.0.push((id, value)),
        }
    }

    fn entry(&mut self, id: ConversationId, default: T) -> &mut T {
        let i = match self.0.iter().position(|(held, _)| *held == id) {
            Some(i) => i,
            None => {
                self.0.push((id, default));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn remove(&mut self, id: ConversationId) {
        self.0.retain(|(held, _)| *held != id);
    }

    fn clear(&mut self) {
        self.0.clear();
    }
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
    /// How present each online user is (SPEC B4): from the welcome, then
    /// presence diffs; users who go offline are removed.
    pub activity: HashMap<UserId, Activity>,
    /// The next client message id to hand out.
    next_client_id: u64,
    /// Ended conversations a reconnect welcome left out: the relay no longer
    /// holds them for this user (closed in another tab meanwhile, or the relay
    /// restarted), so closing one is local and they are not resumed.
    unheld: Vec<ConversationId>,
    /// When this page last sent `typing` for each conversation (the page's
    /// clock, in milliseconds).
    typing_sent: PerConversation<f64>,
    /// The highest marks (delivered, read) this page sent for each conversation.
    marks_sent: PerConversation<(Seq, Seq)>,
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
        self.unheld.retain(|held| *held != id);
        self.typing_sent.remove(id);
        self.marks_sent.remove(id);
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
                activity,
                ..
            } => self.welcome(me, online, conversations, activity),
            ServerMsg::Presence {
                joined,
                left,
                activity,
            } => self.presence(joined, left, activity),
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
            ServerMsg::Typing {
                conversation,
                user,
                active,
            } => {
                let me = self.me_id();
                if let Some(c) = self.conversation_mut(conversation) {
                    c.set_typing(user, active, me);
                }
            }
            ServerMsg::Marks {
                conversation,
                marks,
            } => {
                if let Some(c) = self.conversation_mut(conversation) {
                    c.merge_marks(marks);
                }
            }
            ServerMsg::Pong { .. } => {}
        }
    }

    /// SPEC U4: a diff of the online list. The list stays sorted without
    /// being sorted again, so a diff costs little even with thousands online.
    /// With it, the activity of those whose activity changed (SPEC B4); who
    /// went offline has none, and types nowhere (SPEC B1).
    fn presence(&mut self, joined: Vec<User>, left: Vec<UserId>, activity: Vec<UserActivity>) {
        let me = self.me_id();
        let listed: HashSet<UserId> = self.online.iter().map(|u| u.id).collect();
        let left: HashSet<UserId> = left.into_iter().collect();
        if !left.is_empty() {
            self.online.retain(|user| !left.contains(&user.id));
            for user in &left {
                self.activity.remove(user);
            }
            for c in &mut self.conversations {
                c.typing.retain(|id| !left.contains(id));
            }
        }
        for entry in activity {
            if !left.contains(&entry.user) {
                self.activity.insert(entry.user, entry.activity);
            }
        }
        for user in joined {
            if Some(user.id) == me || listed.contains(&user.id) || left.contains(&user.id) {
                continue;
            }
            match self.online.binary_search_by(|u| by_name(u, &user)) {
                // Listed by this very diff (a repeated join): nothing to add.
                Ok(_) => {}
                Err(i) => {
                    // A newcomer the diff gives no activity is away.
                    self.activity.entry(user.id).or_insert(Activity::Away);
                    self.online.insert(i, user);
                }
            }
        }
    }

    /// SPEC U1, C2, R2: the whole state, on connect and on every reconnect.
    ///
    /// Who is typing is unknown again until the relay says (SPEC B1), and so
    /// is when this page last announced its own typing.
    fn welcome(
        &mut self,
        me: User,
        online: Vec<User>,
        snapshots: Vec<ConversationSnapshot>,
        activity: Vec<UserActivity>,
    ) {
        if self.me_id().is_some_and(|held| held != me.id) {
            // Another user signed in on this page: nothing of the last one stays.
            self.reset();
        }
        let reconnect = self.connected_once;
        let me_id = me.id;
        self.me = Some(me);

        let mut online: Vec<User> = online.into_iter().filter(|u| u.id != me_id).collect();
        sort_by(&mut online, by_name);
        online.dedup_by_key(|u| u.id);
        self.activity = activity
            .into_iter()
            .map(|entry| (entry.user, entry.activity))
            .collect();
        // A user the welcome gives no activity is away.
        for user in &online {
            self.activity.entry(user.id).or_insert(Activity::Away);
        }
        self.online = online;
        self.typing_sent.clear();
        for c in &mut self.conversations {
            c.typing.clear();
        }

        let seen: Vec<ConversationId> = snapshots.iter().map(|s| s.id).collect();
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
                        if !self.unheld.contains(&c.id) {
                            self.unheld.push(c.id);
                        }
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
        // Typing right after sending announces itself again (SPEC B1).
        self.typing_sent.remove(conversation);
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
        sort_by(&mut with, Ord::cmp);
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

    /// The user typed in a conversation's box at `now_ms` (the page's clock,
    /// in milliseconds): the `typing` frame to send, at most once per
    /// [`TYPING_EVERY_MS`] per conversation (SPEC B1). `None` when one went
    /// out recently, or if the conversation is not held and live.
    pub fn typing(&mut self, conversation: ConversationId, now_ms: f64) -> Option<ClientMsg> {
        if !self.conversation(conversation)?.is_live() {
            return None;
        }
        if let Some(last) = self.typing_sent.get(conversation) {
            // A clock that went back counts as time passed: never silenced for long.
            if now_ms >= *last && now_ms - *last < TYPING_EVERY_MS {
                return None;
            }
        }
        self.typing_sent.insert(conversation, now_ms);
        Some(ClientMsg::Typing { conversation })
    }

    /// How the relay last saw this user (SPEC B4); `None` if offline or unknown.
    pub fn activity_of(&self, user: UserId) -> Option<Activity> {
        self.activity.get(&user).copied()
    }

    /// My unread messages in every conversation held (SPEC B3); 0 before
    /// the welcome.
    pub fn total_unread(&self) -> usize {
        let Some(me) = self.me_id() else {
            return 0;
        };
        self.conversations.iter().map(|c| c.unread(me)).sum()
    }

    /// What the page title starts with (SPEC B3): `"(N) "` with N messages
    /// unread in all, nothing when none are.
    pub fn title_prefix(&self) -> String {
        match self.total_unread() {
            0 => String::new(),
            n => format!("({n}) "),
        }
    }

    /// This tab's marks in a conversation (SPEC B2, B3), called after
    /// messages arrive and when the tab becomes focused and visible: every
    /// message held was delivered here; they were read too if the tab is
    /// `visible_and_focused`. My marks are updated at once (so the unread
    /// count drops) and the `marks` frame returned, but only when they went
    /// beyond what this tab last sent: never one frame per message, none
    /// when nothing moved. `None` as well for a conversation the relay no
    /// longer holds (lost, or left out of a reconnect welcome).
    pub fn marks_update(
        &mut self,
        conversation: ConversationId,
        visible_and_focused: bool,
    ) -> Option<ClientMsg> {
        let me = self.me_id()?;
        let unheld = self.unheld.contains(&conversation);
        let c = self.conversation_mut(conversation)?;
        let held = c.marks_of(me);
        let delivered = c.last_seq;
        let read = if visible_and_focused {
            c.last_seq
        } else {
            held.map_or(Seq(0), |m| m.read)
        };
        c.merge_marks(Marks {
            user: me,
            delivered,
            read,
        });
        if c.ended == Some(Ended::Lost) || unheld {
            return None;
        }
        let sent = self.marks_sent.entry(conversation, (Seq(0), Seq(0)));
        if delivered <= sent.0 && read <= sent.1 {
            return None;
        }
        *sent = (sent.0.max(delivered), sent.1.max(read));
        Some(ClientMsg::Marks {
            conversation,
            delivered,
            read,
        })
    }

    /// [`ChatState::marks_update`] for every conversation held: the frames
    /// for those whose marks moved, in the order of the conversations.
    pub fn marks_updates(&mut self, visible_and_focused: bool) -> Vec<ClientMsg> {
        let ids: Vec<ConversationId> = self.conversations.iter().map(|c| c.id).collect();
        ids.into_iter()
            .filter_map(|id| self.marks_update(id, visible_and_focused))
            .collect()
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
            marks: vec![],
        }
    }

    fn welcome(online: &[UserId], conversations: Vec<ConversationSnapshot>) -> ServerMsg {
        ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(ME),
            online: online.iter().map(|u| user(*u)).collect(),
            conversations,
            activity: vec![],
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
            activity: vec![],
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
            activity: vec![],
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
        let mut ids = std::collections::BTreeSet::new();
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
            activity: vec![],
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
                activity: vec![],
            },
            ServerMsg::Typing {
                conversation: unknown,
                user: BOB,
                active: true,
            },
            ServerMsg::Marks {
                conversation: unknown,
                marks: Marks {
                    user: BOB,
                    delivered: Seq(u64::MAX),
                    read: Seq(u64::MAX),
                },
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

    fn typing(conversation: ConversationId, who: UserId, active: bool) -> ServerMsg {
        ServerMsg::Typing {
            conversation,
            user: who,
            active,
        }
    }

    fn marks(conversation: ConversationId, who: UserId, delivered: u64, read: u64) -> ServerMsg {
        ServerMsg::Marks {
            conversation,
            marks: Marks {
                user: who,
                delivered: Seq(delivered),
                read: Seq(read),
            },
        }
    }

    fn mark(who: UserId, delivered: u64, read: u64) -> Marks {
        Marks {
            user: who,
            delivered: Seq(delivered),
            read: Seq(read),
        }
    }

    /// [`connected`] plus a live group with Bob, Carol and Dave.
    fn with_group() -> ChatState {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL, DAVE], &[]),
        });
        state
    }

    fn group(state: &ChatState) -> &Conversation {
        state.conversation(G).expect("the group is held")
    }

    #[test]
    fn b1_typing_list_keeps_start_order_without_repeats_and_never_me() {
        let mut state = with_group();
        state.apply(typing(G, DAVE, true));
        state.apply(typing(G, BOB, true));
        state.apply(typing(G, DAVE, true));
        state.apply(typing(G, ME, true));
        assert_eq!(
            group(&state).typing,
            [DAVE, BOB],
            "in order, once, never me"
        );
        // Strangers, and typing in another conversation, change nothing here.
        state.apply(typing(G, UserId(77), true));
        state.apply(typing(C, BOB, true));
        assert_eq!(group(&state).typing, [DAVE, BOB]);
        assert_eq!(dialog(&state).typing, [BOB]);

        state.apply(typing(G, DAVE, false));
        state.apply(typing(G, DAVE, false));
        state.apply(typing(G, CAROL, false));
        assert_eq!(group(&state).typing, [BOB]);
        state.apply(typing(G, DAVE, true));
        assert_eq!(group(&state).typing, [BOB, DAVE], "a restart goes last");
    }

    #[test]
    fn b1_typing_clears_on_their_message_departure_end_and_reconnect() {
        let mut state = with_group();
        for who in [BOB, CAROL, DAVE] {
            state.apply(typing(G, who, true));
        }
        state.apply(ServerMsg::Message {
            conversation: G,
            message: message(1, BOB, 1),
        });
        assert_eq!(group(&state).typing, [CAROL, DAVE], "sending ends typing");
        state.apply(ServerMsg::Departed {
            conversation: G,
            user: CAROL,
            reason: Departure::Left,
        });
        assert_eq!(group(&state).typing, [DAVE]);
        state.apply(ServerMsg::Departed {
            conversation: G,
            user: DAVE,
            reason: Departure::WentOffline,
        });
        assert!(group(&state).typing.is_empty());
        state.apply(typing(G, DAVE, true));
        assert!(group(&state).typing.is_empty(), "gone, so not typing");

        // The end of a conversation clears it, and nobody types in it after.
        state.apply(typing(C, BOB, true));
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::Left,
            },
        });
        assert!(dialog(&state).typing.is_empty());
        state.apply(typing(C, BOB, true));
        assert!(dialog(&state).typing.is_empty());

        // Going offline clears it everywhere.
        state.apply(typing(G, BOB, true));
        state.apply(ServerMsg::Presence {
            joined: vec![],
            left: vec![BOB],
            activity: vec![],
        });
        assert!(group(&state).typing.is_empty());

        // A reconnect forgets who was typing until the relay says again.
        let mut state = connected();
        state.apply(typing(C, BOB, true));
        state.apply(welcome(&[BOB], vec![snapshot(C, &[ME, BOB], &[2, 3])]));
        assert!(dialog(&state).typing.is_empty());
        assert_eq!(dialog(&state).typing_line(ME), None);
    }

    #[test]
    fn b1_typing_line_names_one_two_or_three_typists_in_order() {
        let mut state = with_group();
        assert_eq!(group(&state).typing_line(ME), None);
        state.apply(typing(G, BOB, true));
        assert_eq!(
            group(&state).typing_line(ME).as_deref(),
            Some("Bob is typing")
        );
        state.apply(typing(G, DAVE, true));
        assert_eq!(
            group(&state).typing_line(ME).as_deref(),
            Some("Bob and dave are typing")
        );
        state.apply(typing(G, CAROL, true));
        assert_eq!(
            group(&state).typing_line(ME).as_deref(),
            Some("Bob, dave and carol are typing"),
            "in the order they started"
        );
        // Should the list ever name me, I am left out.
        let mut g = group(&state).clone();
        g.typing.insert(0, ME);
        assert_eq!(
            g.typing_line(ME).as_deref(),
            Some("Bob, dave and carol are typing")
        );
        g.typing = vec![ME];
        assert_eq!(g.typing_line(ME), None);
        g.typing = vec![UserId(500)];
        assert_eq!(g.typing_line(ME).as_deref(), Some("Someone is typing"));
    }

    #[test]
    fn b1_typing_frames_go_at_most_every_2000_ms_per_conversation() {
        let mut state = with_group();
        let frame = |c| Some(ClientMsg::Typing { conversation: c });
        assert_eq!(state.typing(C, 10_000.0), frame(C));
        assert_eq!(state.typing(C, 10_500.0), None);
        assert_eq!(state.typing(C, 11_999.0), None);
        assert_eq!(state.typing(G, 11_999.0), frame(G), "per conversation");
        assert_eq!(state.typing(C, 12_000.0), frame(C));
        assert_eq!(state.typing(C, 12_001.0), None);

        // Sending forgets it: typing the next message announces at once.
        state.send(C, "hi").expect("valid");
        assert_eq!(state.typing(C, 12_002.0), frame(C));
        assert_eq!(state.typing(C, 12_003.0), None);
        // A failed send does not.
        assert_eq!(state.send(C, "  "), Err(SendError::Blank));
        assert_eq!(state.typing(C, 12_004.0), None);
        // A clock that went back does not silence it.
        assert_eq!(state.typing(C, 5_000.0), frame(C));

        // Nothing for an ended or unknown conversation.
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::WentOffline,
            },
        });
        assert_eq!(state.typing(C, 99_000.0), None);
        assert_eq!(state.typing(ConversationId(99), 99_000.0), None);
        assert_eq!(ChatState::new(0).typing(C, 0.0), None);
        assert_eq!(state.typing(G, f64::NAN), frame(G), "no panic on NaN");
    }

    #[test]
    fn b2_marks_merge_field_by_field_and_never_go_back() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: ConversationSnapshot {
                marks: vec![mark(CAROL, 2, 1), mark(BOB, 3, 1)],
                ..snapshot(G, &[ME, BOB, CAROL], &[1, 2, 3])
            },
        });
        assert_eq!(
            group(&state).marks,
            [mark(BOB, 3, 1), mark(CAROL, 2, 1)],
            "one per user, sorted"
        );
        state.apply(marks(G, BOB, 2, 3));
        state.apply(marks(G, CAROL, 1, 0));
        assert_eq!(
            group(&state).marks,
            [mark(BOB, 3, 3), mark(CAROL, 2, 1)],
            "max per field"
        );
        // A snapshot on reconnect merges the same way.
        state.apply(welcome(
            &[BOB, CAROL],
            vec![
                snapshot(C, &[ME, BOB], &[]),
                ConversationSnapshot {
                    marks: vec![mark(BOB, 1, 1), mark(CAROL, 3, 2), mark(DAVE, 1, 0)],
                    ..snapshot(G, &[ME, BOB, CAROL], &[])
                },
            ],
        ));
        let g = group(&state);
        assert_eq!(
            g.marks,
            [mark(BOB, 3, 3), mark(CAROL, 3, 2), mark(DAVE, 1, 0)]
        );
        assert_eq!(g.marks_of(CAROL), Some(mark(CAROL, 3, 2)));
        assert_eq!(g.marks_of(ME), None);
    }

    #[test]
    fn b2_ticks_go_sent_delivered_read_in_a_dialog_only() {
        let mut state = with_group();
        let frame = state.send(C, "did you get it?").expect("valid");
        state.apply(echo(&frame, 3));
        let mine = echo_message(&frame, 3);
        let tick = |s: &ChatState| dialog(s).tick(&mine, ME);
        assert_eq!(tick(&state), Some(Tick::Sent));
        state.apply(marks(C, BOB, 3, 2));
        assert_eq!(tick(&state), Some(Tick::Delivered));
        state.apply(marks(C, BOB, 3, 3));
        assert_eq!(tick(&state), Some(Tick::Read));
        state.apply(marks(C, BOB, 1, 1));
        assert_eq!(tick(&state), Some(Tick::Read), "never back");
        // A read mark alone means read.
        let later = ChatMessage {
            seq: Seq(4),
            ..mine.clone()
        };
        state.apply(marks(C, BOB, 3, 4));
        assert_eq!(dialog(&state).tick(&later, ME), Some(Tick::Read));
        // My own marks say nothing about the recipient.
        state.apply(marks(C, ME, 9, 9));
        let unseen = ChatMessage {
            seq: Seq(9),
            ..mine.clone()
        };
        assert_eq!(dialog(&state).tick(&unseen, ME), Some(Tick::Sent));

        // Others' messages get none, nor do groups.
        let theirs = message(2, BOB, 902);
        assert_eq!(dialog(&state).tick(&theirs, ME), None);
        state.apply(marks(G, BOB, 9, 9));
        let in_group = ChatMessage {
            seq: Seq(1),
            ..mine.clone()
        };
        assert_eq!(group(&state).tick(&in_group, ME), None);

        // An ended dialog keeps its ticks.
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::Left,
            },
        });
        assert_eq!(tick(&state), Some(Tick::Read));

        assert_eq!(Tick::Sent.label(), "Sent");
        assert_eq!(Tick::Delivered.label(), "Delivered");
        assert_eq!(Tick::Read.label(), "Read");
    }

    #[test]
    fn b3_unread_counts_others_messages_after_my_read_mark_and_the_title_says_so() {
        let state = ChatState::new(0);
        assert_eq!(state.total_unread(), 0, "not welcomed");
        assert_eq!(state.title_prefix(), "");

        let mut state = connected();
        assert_eq!(dialog(&state).unread(ME), 2);
        let frame = state.send(C, "mine").expect("valid");
        state.apply(echo(&frame, 3));
        assert_eq!(dialog(&state).unread(ME), 2, "my messages are never unread");
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[1, 2, 3, 4, 5]),
        });
        assert_eq!(group(&state).unread(ME), 5);
        assert_eq!(state.total_unread(), 7);
        assert_eq!(state.title_prefix(), "(7) ");

        state.apply(marks(G, ME, 5, 4));
        assert_eq!(group(&state).unread(ME), 1);
        state.apply(marks(C, ME, 3, 3));
        assert_eq!(state.total_unread(), 1);
        assert_eq!(state.title_prefix(), "(1) ");
        state.apply(marks(G, ME, 5, 5));
        assert_eq!(state.total_unread(), 0);
        assert_eq!(state.title_prefix(), "");
        // Others' marks do not count as mine.
        state.apply(ServerMsg::Message {
            conversation: G,
            message: message(6, CAROL, 6),
        });
        state.apply(marks(G, BOB, 6, 6));
        assert_eq!(state.title_prefix(), "(1) ");
    }

    #[test]
    fn b3_marks_update_sends_when_moved_and_reads_only_when_visible_and_focused() {
        let mut state = connected();
        let sent = |delivered, read| {
            Some(ClientMsg::Marks {
                conversation: C,
                delivered: Seq(delivered),
                read: Seq(read),
            })
        };
        // Hidden: delivered only; the messages stay unread.
        assert_eq!(state.marks_update(C, false), sent(2, 0));
        assert_eq!(state.marks_update(C, false), None, "unchanged: nothing");
        assert_eq!(dialog(&state).unread(ME), 2);
        assert_eq!(dialog(&state).marks_of(ME), Some(mark(ME, 2, 0)));

        // Focused and visible: read, and the count drops at once.
        assert_eq!(state.marks_update(C, true), sent(2, 2));
        assert_eq!(dialog(&state).unread(ME), 0);
        assert_eq!(state.title_prefix(), "");
        assert_eq!(state.marks_update(C, true), None);

        // A new message while hidden: delivered moves, read stays.
        state.apply(ServerMsg::Message {
            conversation: C,
            message: message(3, BOB, 3),
        });
        assert_eq!(state.title_prefix(), "(1) ");
        assert_eq!(state.marks_update(C, false), sent(3, 2));
        assert_eq!(state.marks_update(C, false), None);
        assert_eq!(state.title_prefix(), "(1) ");
        assert_eq!(state.marks_update(C, true), sent(3, 3));
        assert_eq!(state.title_prefix(), "");

        // Nothing for what is not held, nor before the welcome.
        assert_eq!(state.marks_update(ConversationId(99), true), None);
        assert_eq!(ChatState::new(0).marks_update(C, true), None);
        // An empty conversation has nothing to mark.
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, CAROL], &[]),
        });
        assert_eq!(state.marks_update(G, true), None);
    }

    #[test]
    fn b3_my_marks_from_another_tab_clear_unread() {
        let mut state = connected();
        assert_eq!(state.title_prefix(), "(2) ");
        state.apply(marks(C, ME, 2, 2));
        assert_eq!(dialog(&state).unread(ME), 0);
        assert_eq!(state.title_prefix(), "");
        // This tab still tells the relay what it received; the read it
        // reports is the one it knows of.
        assert_eq!(
            state.marks_update(C, false),
            Some(ClientMsg::Marks {
                conversation: C,
                delivered: Seq(2),
                read: Seq(2),
            })
        );
        assert_eq!(state.marks_update(C, true), None);
    }

    #[test]
    fn b3_marks_updates_cover_every_conversation_the_relay_holds() {
        let mut state = connected();
        state.apply(ServerMsg::Started {
            conversation: snapshot(G, &[ME, BOB, CAROL], &[1]),
        });
        assert_eq!(
            state.marks_updates(true),
            [
                ClientMsg::Marks {
                    conversation: C,
                    delivered: Seq(2),
                    read: Seq(2),
                },
                ClientMsg::Marks {
                    conversation: G,
                    delivered: Seq(1),
                    read: Seq(1),
                },
            ]
        );
        assert!(state.marks_updates(true).is_empty());

        // After a relay restart the dialog is lost: read locally, never sent.
        state.apply(welcome(
            &[BOB],
            vec![snapshot(G, &[ME, BOB, CAROL], &[1, 2])],
        ));
        assert_eq!(dialog(&state).ended, Some(Ended::Lost));
        state.apply(ServerMsg::Message {
            conversation: C,
            message: message(3, BOB, 3),
        });
        assert_eq!(
            state.marks_updates(true),
            [ClientMsg::Marks {
                conversation: G,
                delivered: Seq(2),
                read: Seq(2),
            }]
        );
        assert_eq!(state.total_unread(), 0);

        // A reused id is a new conversation: its marks start afresh.
        state.apply(ServerMsg::Started {
            conversation: snapshot(C, &[ME, DAVE], &[1]),
        });
        assert_eq!(dialog(&state).marks, []);
        assert_eq!(
            state.marks_update(C, false),
            Some(ClientMsg::Marks {
                conversation: C,
                delivered: Seq(1),
                read: Seq(0),
            })
        );
    }

    /// The relay names no activity for users who are away (the default):
    /// the page shows them away, from the welcome and from a join alike.
    #[test]
    fn b4_users_named_without_activity_are_away() {
        let mut state = ChatState::new(0);
        state.apply(ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(ME),
            online: vec![user(BOB), user(CAROL)],
            conversations: vec![],
            activity: vec![UserActivity {
                user: BOB,
                activity: Activity::Active,
            }],
        });
        assert_eq!(state.activity_of(BOB), Some(Activity::Active));
        assert_eq!(state.activity_of(CAROL), Some(Activity::Away));
        state.apply(ServerMsg::Presence {
            joined: vec![user(DAVE)],
            left: vec![],
            activity: vec![],
        });
        assert_eq!(state.activity_of(DAVE), Some(Activity::Away));
        // A repeated join changes nothing already known.
        state.apply(ServerMsg::Presence {
            joined: vec![user(BOB)],
            left: vec![],
            activity: vec![],
        });
        assert_eq!(state.activity_of(BOB), Some(Activity::Active));
    }

    #[test]
    fn b4_activity_from_welcome_and_presence_and_gone_when_offline() {
        let mut state = ChatState::new(0);
        let act = |who, activity| UserActivity {
            user: who,
            activity,
        };
        state.apply(ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(ME),
            online: vec![user(BOB), user(CAROL)],
            conversations: vec![],
            activity: vec![act(BOB, Activity::Active), act(CAROL, Activity::Away)],
        });
        assert_eq!(state.activity_of(BOB), Some(Activity::Active));
        assert_eq!(state.activity_of(CAROL), Some(Activity::Away));
        assert_eq!(state.activity_of(DAVE), None);

        state.apply(ServerMsg::Presence {
            joined: vec![user(DAVE)],
            left: vec![CAROL],
            activity: vec![
                act(DAVE, Activity::Active),
                act(BOB, Activity::Reconnecting),
                act(CAROL, Activity::Active),
            ],
        });
        assert_eq!(state.activity_of(DAVE), Some(Activity::Active));
        assert_eq!(state.activity_of(BOB), Some(Activity::Reconnecting));
        assert_eq!(state.activity_of(CAROL), None, "offline wins");
        assert_eq!(state.activity.len(), 2);

        // A welcome replaces it all.
        state.apply(ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: user(ME),
            online: vec![user(BOB)],
            conversations: vec![],
            activity: vec![act(BOB, Activity::Away)],
        });
        assert_eq!(
            state.activity,
            HashMap::from([(BOB, Activity::Away)]),
            "Dave is gone"
        );
        state.reset();
        assert!(state.activity.is_empty());
    }

    #[test]
    fn b5_transcript_has_one_lossless_line_per_message() {
        let mut state = connected();
        let frame = state.send(C, "two\nlines and C:\\path\\n").expect("valid");
        state.apply(echo(&frame, 3));
        state.apply(ServerMsg::Message {
            conversation: C,
            message: ChatMessage {
                text: "crlf\r\nend".into(),
                ..message(4, UserId(500), 4)
            },
        });
        state.apply(ServerMsg::Departed {
            conversation: C,
            user: BOB,
            reason: Departure::Left,
        });
        let text = dialog(&state).transcript(|ms| format!("[{ms}]"));
        assert_eq!(
            text,
            "[1700000000001] Bob: message 1\n\
             [1700000000002] Bob: message 2\n\
             [1] alice: two\\nlines and C:\\\\path\\\\n\n\
             [1700000000004] Someone: crlf\\r\\nend\n",
            "notices left out"
        );
        assert_eq!(text.lines().count(), 4, "one line per message");
        let empty = Conversation::from_snapshot(snapshot(G, &[ME], &[]), Some(ME));
        assert_eq!(empty.transcript(|_| String::new()), "");
    }

    #[test]
    fn b5_transcript_file_name_names_the_others() {
        let mut state = connected();
        assert_eq!(dialog(&state).transcript_file_name(ME), "chat-with-bob.txt");
        let mut weird = user(DAVE);
        weird.name = "Dä ve/../x".into();
        state.apply(ServerMsg::Started {
            conversation: ConversationSnapshot {
                participants: vec![user(ME), user(CAROL), user(BOB), weird],
                ..snapshot(G, &[], &[])
            },
        });
        assert_eq!(
            group(&state).transcript_file_name(ME),
            "chat-with-bob-carol-d--ve-..-x.txt"
        );
        // An ended dialog keeps the name of the one who went.
        state.apply(ServerMsg::Ended {
            conversation: C,
            ending: Ending {
                user: BOB,
                reason: Departure::WentOffline,
            },
        });
        assert_eq!(dialog(&state).transcript_file_name(ME), "chat-with-bob.txt");
        let alone = Conversation::from_snapshot(snapshot(G, &[ME], &[]), Some(ME));
        assert_eq!(alone.transcript_file_name(ME), "chat.txt");
    }

    #[test]
    fn l7_b_frames_and_intents_out_of_place_never_panic() {
        let mut state = ChatState::new(0);
        assert_eq!(state.typing(C, 0.0), None);
        assert_eq!(state.marks_update(C, true), None);
        assert!(state.marks_updates(true).is_empty());
        assert_eq!(state.activity_of(BOB), None);
        // Frames before the welcome, and absurd marks, are taken in stride.
        state.apply(ServerMsg::Started {
            conversation: ConversationSnapshot {
                marks: vec![mark(ME, u64::MAX, u64::MAX), mark(ME, 0, 0)],
                ..snapshot(C, &[ME, BOB], &[1])
            },
        });
        state.apply(typing(C, BOB, true));
        state.apply(typing(C, BOB, true));
        assert_eq!(dialog(&state).typing, [BOB]);
        assert_eq!(dialog(&state).unread(ME), 0);
        assert_eq!(dialog(&state).marks, [mark(ME, u64::MAX, u64::MAX)]);
        assert_eq!(state.total_unread(), 0, "no me yet");
        let theirs = message(1, BOB, 1);
        assert_eq!(
            dialog(&state).tick(&theirs, BOB),
            Some(Tick::Read),
            "seen from Bob's side"
        );
        assert_eq!(dialog(&state).tick(&theirs, DAVE), None, "not a member");
    }
}
