//! The wire protocol: JSON text frames over one WebSocket.
//!
//! Every frame is an object with a `"type"` tag. The client opens with
//! [`ClientMsg::Hello`], naming the protocol version and, on a reconnect, the
//! last sequence number it holds of each conversation. The relay answers
//! [`ServerMsg::Welcome`] with everything the page shows: the signed-in user,
//! the other online users, and every live conversation of the user with the
//! messages the client lacks. After that, changes arrive as they happen:
//! presence diffs, new conversations, messages, departures.
//!
//! Errors are data: a machine-readable [`ErrorKind`] plus a human sentence.
//! Changing anything here changes the wire: the golden tests at the bottom
//! pin the exact JSON so that such a change is always deliberate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version spoken by this build. Bumped on any incompatible
/// change to the frames below (3: the online lists' rows carry a palette
/// colour as its index in [`PALETTE`]).
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest frame the relay accepts, in bytes (SPEC L3). Larger frames
/// close the connection with [`close_code::MESSAGE_TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The longest message text, in characters (SPEC C4).
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// The most participants a conversation may have, the user included (SPEC C10, L5).
pub const MAX_PARTICIPANTS: usize = 16;

/// WebSocket close codes the relay uses, with the meaning the client gives them.
pub mod close_code {
    /// The relay is restarting: reconnect (SPEC R3).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Too many invalid frames (SPEC L3), or too many connections (L5).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over [`super::MAX_FRAME_BYTES`] (SPEC L3).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The session ended (log out, expiry): show the sign-in page (SPEC S5).
    /// In the range reserved for applications.
    pub const SIGNED_OUT: u16 = 4001;
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// A user (account), assigned by the relay.
    UserId
);
id_newtype!(
    /// A conversation, assigned by the relay; never reused while it lives.
    ConversationId
);
id_newtype!(
    /// A message's place in its conversation: 1, 2, 3… with no gaps.
    Seq
);
id_newtype!(
    /// Chosen by the sending page for each message; a resend with the same id
    /// is delivered once (SPEC C6).
    ClientMsgId
);

/// What every page knows of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The relay's id.
    pub id: UserId,
    /// The name as first typed.
    pub name: String,
    /// A CSS colour, fixed at sign-up (SPEC S6): one of [`PALETTE`] for
    /// every account the relay creates.
    pub color: String,
}

/// The colours accounts get at sign-up (SPEC S6): twelve hues spread
/// around the wheel, each readable against the page background (a WCAG
/// contrast of at least 4.5:1 against both light page backgrounds,
/// `#ffffff` and `#f7f7f8`; the dark theme lightens them in CSS).
///
/// The order is part of the wire: the online lists carry a palette colour
/// as its index here ([`user_rows`]). Only append, never reorder or remove.
pub const PALETTE: &[&str] = &[
    "#b91c1c", // red
    "#c2410c", // orange
    "#a16207", // ochre
    "#4d7c0f", // olive
    "#15803d", // green
    "#0f766e", // teal
    "#0369a1", // sky
    "#1d4ed8", // blue
    "#4338ca", // indigo
    "#7e22ce", // purple
    "#a21caf", // magenta
    "#be185d", // pink
];

/// The online lists of `welcome` and `presence` (SPEC U1, U4) carry each
/// user as a row `[id, name, color]` rather than an object: with 5,000
/// online those lists are nearly all of the presence traffic, and the keys
/// repeated in every object were 40 % of it.
///
/// The colour is the index of the user's colour in [`PALETTE`] when it is
/// exactly one of them (`[1234,"bench01234",0]`), and the CSS colour
/// otherwise (`[2,"bob","#123456"]`): every account the relay creates has
/// a palette colour (SPEC S6), and the index takes about a quarter off each
/// row. A reader takes an index below `PALETTE.len()` as that palette
/// colour and a string as it is; any other index, and any other value, is
/// an error. Everywhere else (`me`, a conversation's participants) a user
/// is an object with its CSS colour.
pub mod user_rows {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{User, UserId, PALETTE};

    /// Writes `users` as rows.
    pub fn serialize<S: Serializer>(users: &[User], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(users.iter().map(row))
    }

    /// Reads rows into users.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<User>, D::Error> {
        let rows = Vec::<(UserId, String, ReadColor)>::deserialize(deserializer)?;
        Ok(rows
            .into_iter()
            .map(|(id, name, ReadColor(color))| User { id, name, color })
            .collect())
    }

    /// One user's row.
    pub fn row(user: &User) -> (UserId, &str, Color<'_>) {
        (user.id, &user.name, Color::of(&user.color))
    }

    /// The palette colour a row's index names, if there is one.
    pub fn palette_color(index: u64) -> Option<&'static str> {
        PALETTE.get(usize::try_from(index).ok()?).copied()
    }

    /// The error for an index past the end of [`PALETTE`], in words.
    fn out_of_range(index: impl fmt::Display) -> String {
        format!(
            "colour index {index} out of range: the palette has {} colours",
            PALETTE.len()
        )
    }

    /// A row's colour as written: a palette index, or a CSS colour.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(untagged)]
    pub enum Color<'a> {
        /// The colour's index in [`PALETTE`].
        Index(usize),
        /// A colour outside the palette, as it is.
        Css(&'a str),
    }

    impl<'a> Color<'a> {
        /// How a row writes `css`: its index if it is exactly a palette
        /// colour, else the string.
        pub fn of(css: &'a str) -> Self {
            match PALETTE.iter().position(|c| *c == css) {
                Some(index) => Color::Index(index),
                None => Color::Css(css),
            }
        }
    }

    /// A row's colour as read: the CSS colour.
    struct ReadColor(String);

    impl<'de> Deserialize<'de> for ReadColor {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ReadColorVisitor)
        }
    }

    struct ReadColorVisitor;

    impl Visitor<'_> for ReadColorVisitor {
        type Value = ReadColor;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a palette index below {} or a CSS colour", PALETTE.len())
        }

        fn visit_u64<E: de::Error>(self, index: u64) -> Result<ReadColor, E> {
            match palette_color(index) {
                Some(css) => Ok(ReadColor(css.to_owned())),
                None => Err(E::custom(out_of_range(index))),
            }
        }

        fn visit_i64<E: de::Error>(self, index: i64) -> Result<ReadColor, E> {
            match u64::try_from(index) {
                Ok(index) => self.visit_u64(index),
                Err(_) => Err(E::custom(out_of_range(index))),
            }
        }

        fn visit_str<E: de::Error>(self, css: &str) -> Result<ReadColor, E> {
            Ok(ReadColor(css.to_owned()))
        }

        fn visit_string<E: de::Error>(self, css: String) -> Result<ReadColor, E> {
            Ok(ReadColor(css))
        }
    }
}

/// One message as the relay stamped it (SPEC C5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Its place in the conversation.
    pub seq: Seq,
    /// Who wrote it: set by the relay from the session, never by the client.
    pub author: UserId,
    /// The relay's clock when it accepted the message, in Unix milliseconds.
    pub time: u64,
    /// The text, exactly as sent.
    pub text: String,
    /// The sender's id for it, so the sender's tabs can match it to a pending send.
    pub client_id: ClientMsgId,
}

/// Why someone is no longer in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// They closed it (SPEC C8).
    Left,
    /// Their last connection went away and the grace period passed (SPEC U3, C7).
    WentOffline,
}

/// How present an online user is (SPEC B4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Some tab of theirs is focused and visible.
    Active,
    /// Only background tabs.
    Away,
    /// No live tab: in the grace period before going offline (SPEC U3).
    Reconnecting,
}

/// One user's [`Activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserActivity {
    /// Who.
    pub user: UserId,
    /// How present.
    pub activity: Activity,
}

/// How far one participant has got in a conversation (SPEC B2, B3): every
/// message up to `delivered` reached a tab of theirs; every message up to
/// `read` was shown in a focused, visible tab of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Whose marks.
    pub user: UserId,
    /// Delivered up to here.
    pub delivered: Seq,
    /// Read up to here.
    pub read: Seq,
}

/// A conversation as a page first learns it: in `welcome`, or when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSnapshot {
    /// Its id.
    pub id: ConversationId,
    /// Everyone in it, the user included, sorted by id.
    pub participants: Vec<User>,
    /// The messages the client lacks, in order: all that history holds for
    /// a new tab; those after the client's last sequence number on resume.
    pub messages: Vec<ChatMessage>,
    /// True if messages the client asked for are no longer held (history
    /// is bounded): the page says so (SPEC R2).
    pub gap: bool,
    /// Set once the conversation has ended: it stays readable, its prompt
    /// disabled, until the user closes it (SPEC C7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
    /// Each participant's delivery and read marks, where they have any (SPEC B2, B3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<Marks>,
}

/// The departure that ended a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// Who went.
    pub user: UserId,
    /// Why.
    pub reason: Departure,
}

/// Where a reconnecting page left off in one conversation (SPEC R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The conversation.
    pub conversation: ConversationId,
    /// The last sequence number the page holds.
    pub last_seq: Seq,
}

/// A frame sent by the browser app to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The first frame of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// On a reconnect: where the page left off in each conversation.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resume: Vec<Resume>,
    },
    /// An application-level heartbeat; the relay answers [`ServerMsg::Pong`]
    /// with the same nonce, so the page notices a dead relay (SPEC U2, R1).
    Ping {
        /// Echoed back unchanged.
        nonce: u64,
    },
    /// Open the conversation with these users (the sender is added): the
    /// live one with exactly this set of participants, or a new one (SPEC C1, C10).
    Open {
        /// The other participants.
        with: Vec<UserId>,
    },
    /// Post a message (SPEC C5, C6).
    Send {
        /// Where.
        conversation: ConversationId,
        /// The page's id for it; resending with the same id delivers it once.
        client_id: ClientMsgId,
        /// The text: not blank, at most [`MAX_MESSAGE_CHARS`] characters.
        text: String,
    },
    /// Leave a conversation (SPEC C8).
    Leave {
        /// Which.
        conversation: ConversationId,
    },
    /// The user is typing in a conversation (SPEC B1); sent at most every
    /// few seconds while they type. The relay expires it.
    Typing {
        /// Where.
        conversation: ConversationId,
    },
    /// How far this tab has got in a conversation (SPEC B2, B3): up-to
    /// markers, sent when they move, never one frame per message.
    Marks {
        /// Where.
        conversation: ConversationId,
        /// Delivered to this tab up to here.
        delivered: Seq,
        /// Shown in this tab while focused and visible up to here.
        read: Seq,
    },
    /// This tab became focused and visible (`active`), or stopped being so (SPEC B4).
    Activity {
        /// Focused and visible.
        active: bool,
    },
}

/// A frame sent by the relay to the browser app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMsg {
    /// The answer to a compatible [`ClientMsg::Hello`]: the whole state.
    Welcome {
        /// The relay's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The signed-in user.
        me: User,
        /// Every other online user (never the user itself), sorted by name,
        /// as [`user_rows`].
        #[serde(with = "user_rows")]
        online: Vec<User>,
        /// Every live conversation of the user.
        conversations: Vec<ConversationSnapshot>,
        /// How present each online user is (SPEC B4); a user not named
        /// here is [`Activity::Away`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        activity: Vec<UserActivity>,
    },
    /// The answer to [`ClientMsg::Ping`].
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
    /// Who came online and who went offline since the last such frame
    /// (SPEC U4: diffs, batched).
    Presence {
        /// Users now online, as [`user_rows`].
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "user_rows")]
        joined: Vec<User>,
        /// Users now offline.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<UserId>,
        /// Online users whose activity changed (SPEC B4), and the joined
        /// unless they are [`Activity::Away`]: a joined user not named here
        /// is away.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        activity: Vec<UserActivity>,
    },
    /// A conversation this user is in has started (SPEC C2).
    Started {
        /// The new conversation.
        conversation: ConversationSnapshot,
    },
    /// Sent only to the connection that asked to open a conversation: this
    /// is the one; give its prompt focus (SPEC C1).
    Opened {
        /// The conversation asked for.
        conversation: ConversationId,
    },
    /// A new message (SPEC C5).
    Message {
        /// Where.
        conversation: ConversationId,
        /// The message.
        message: ChatMessage,
    },
    /// Someone is no longer in a conversation that goes on (SPEC C10).
    Departed {
        /// Where.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// Why.
        reason: Departure,
    },
    /// The conversation has ended: it stays readable, its prompt disabled
    /// (SPEC C7, C8, C10).
    Ended {
        /// Which.
        conversation: ConversationId,
        /// The departure that ended it.
        ending: Ending,
    },
    /// This user left the conversation (from this or another tab): remove it.
    Closed {
        /// Which.
        conversation: ConversationId,
    },
    /// Someone started (`active`) or stopped typing in a conversation (SPEC B1).
    Typing {
        /// Where.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// Typing now, or stopped (sent, paused 5 s, left, went offline).
        active: bool,
    },
    /// A participant's marks moved (SPEC B2, B3); the user's own marks
    /// reach their other tabs this way too.
    Marks {
        /// Where.
        conversation: ConversationId,
        /// The new marks.
        marks: Marks,
    },
    /// Something the client sent could not be accepted. The connection stays
    /// open unless a close frame follows.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
        /// The message that was refused, when it was a [`ClientMsg::Send`]:
        /// the page keeps its text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<ClientMsgId>,
    },
}

/// Machine-readable error kinds carried by [`ServerMsg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame is not valid protocol: not JSON, not text, or an unknown shape.
    BadFrame,
    /// The client speaks another [`PROTOCOL_VERSION`].
    UnsupportedProtocol,
    /// A frame other than `hello` arrived before the handshake, or a second `hello`.
    HelloRequired,
    /// No such conversation for this user. Also the answer for conversations
    /// the user is not in: their existence is not revealed (SPEC L2).
    NoSuchConversation,
    /// The conversation has ended; nothing more can be posted.
    ConversationEnded,
    /// A user to open a conversation with is not online (or does not exist).
    UserOffline,
    /// A conversation needs at least one other participant, and at most
    /// [`MAX_PARTICIPANTS`] in all (SPEC C10, L5).
    BadParticipants,
    /// The user already has as many live conversations as allowed (SPEC L5).
    TooManyConversations,
    /// The user already has as many connections as allowed (SPEC L5).
    TooManyConnections,
    /// A blank message.
    EmptyMessage,
    /// A message over [`MAX_MESSAGE_CHARS`] (SPEC C4).
    MessageTooLong,
    /// Over the message rate limit: not delivered (SPEC L4).
    SlowDown,
}

impl ErrorKind {
    /// A stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::UnsupportedProtocol => "unsupported_protocol",
            ErrorKind::HelloRequired => "hello_required",
            ErrorKind::NoSuchConversation => "no_such_conversation",
            ErrorKind::ConversationEnded => "conversation_ended",
            ErrorKind::UserOffline => "user_offline",
            ErrorKind::BadParticipants => "bad_participants",
            ErrorKind::TooManyConversations => "too_many_conversations",
            ErrorKind::TooManyConnections => "too_many_connections",
            ErrorKind::EmptyMessage => "empty_message",
            ErrorKind::MessageTooLong => "message_too_long",
            ErrorKind::SlowDown => "slow_down",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::BadFrame,
        ErrorKind::UnsupportedProtocol,
        ErrorKind::HelloRequired,
        ErrorKind::NoSuchConversation,
        ErrorKind::ConversationEnded,
        ErrorKind::UserOffline,
        ErrorKind::BadParticipants,
        ErrorKind::TooManyConversations,
        ErrorKind::TooManyConnections,
        ErrorKind::EmptyMessage,
        ErrorKind::MessageTooLong,
        ErrorKind::SlowDown,
    ];

    /// True for errors caused by a malformed frame rather than a refused
    /// request: these count towards the limit of SPEC L3.
    pub fn is_protocol_violation(self) -> bool {
        matches!(
            self,
            ErrorKind::BadFrame | ErrorKind::UnsupportedProtocol | ErrorKind::HelloRequired
        )
    }
}

impl ClientMsg {
    /// Parses one text frame. The error names the problem in words fit to be
    /// sent back in a [`ServerMsg::Error`].
    pub fn decode(text: &str) -> Result<Self, String> {
        if let Some(send) = decode_send(text) {
            return Ok(send);
        }
        serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))
    }

    /// The JSON text of this frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

/// A `send` frame, the one clients send most by far, as the page and serde
/// write it: its tag first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    conversation: ConversationId,
    client_id: ClientMsgId,
    text: String,
}

/// `text` as a `send` frame if it opens with that tag and holds exactly its
/// fields: read in one pass into those fields. serde's reading of a tagged
/// enum first copies the whole frame into a tree of its own (the tag may
/// come last); anything this does not take, [`ClientMsg::decode`] reads
/// that way, with the same result or error as ever (a test holds the two
/// together).
fn decode_send(text: &str) -> Option<ClientMsg> {
    if !text.starts_with(r#"{"type":"send","#) {
        return None;
    }
    if let Some(send) = decode_plain_send(text) {
        return Some(send);
    }
    let frame: SendFrame<'_> = serde_json::from_str(text).ok()?;
    (frame.kind == "send").then_some(ClientMsg::Send {
        conversation: frame.conversation,
        client_id: frame.client_id,
        text: frame.text,
    })
}

/// `text` as a `send` frame if it is exactly what the page writes for a
/// text that needs no escaping: the tag, then `conversation`, `client_id`
/// and `text`, without spaces, numbers without leading zeros. Such a frame
/// is read by slicing, not by a JSON reader; anything else goes on to serde
/// (the test of [`decode_send`] holds them together).
fn decode_plain_send(text: &str) -> Option<ClientMsg> {
    let rest = text.strip_prefix(r#"{"type":"send","conversation":"#)?;
    let (conversation, rest) = plain_u64(rest)?;
    let rest = rest.strip_prefix(r#","client_id":"#)?;
    let (client_id, rest) = plain_u64(rest)?;
    let body = rest.strip_prefix(r#","text":""#)?.strip_suffix(r#""}"#)?;
    // No quote, backslash or control character: the body is the text.
    needs_no_escape(body).then(|| ClientMsg::Send {
        conversation: ConversationId(conversation),
        client_id: ClientMsgId(client_id),
        text: body.to_string(),
    })
}

/// A JSON number that is a `u64` as serde reads it (no sign, no leading
/// zero, no fraction or exponent: the caller checks what follows), and the
/// rest of `text`.
fn plain_u64(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = text.split_at(digits);
    if digits == 0 || (digits > 1 && number.starts_with('0')) {
        return None;
    }
    Some((number.parse().ok()?, rest))
}

impl ServerMsg {
    /// Parses one text frame from the relay.
    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))
    }

    /// The JSON text of this frame.
    pub fn encode(&self) -> String {
        match self {
            ServerMsg::Message {
                conversation,
                message,
            } => encode_message(*conversation, message),
            _ => serde_json::to_string(self).expect("server frames always serialize"),
        }
    }

    /// Shorthand for an error frame.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            kind,
            message: message.into(),
            client_id: None,
        }
    }
}

/// The online users of many `welcome` frames, encoded once (SPEC U1, U4).
///
/// A welcome lists every other online user with their activity: at
/// thousands online that is most of the frame, and a burst of newcomers
/// would otherwise encode the same list again for each. The relay encodes
/// the list once per presence batch; [`EncodedRoster::welcome`] then writes
/// each newcomer's frame around it, leaving out the newcomer's own entry.
/// The bytes equal [`ServerMsg::encode`] of the same welcome (a test holds
/// the two together).
#[derive(Debug, Default, Clone)]
pub struct EncodedRoster {
    /// Each user's JSON row ([`user_rows`]), one after another.
    users: String,
    /// Where each user's row ends in `users`.
    user_ends: Vec<usize>,
    /// Each user's activity object, in the same order.
    activity: String,
    /// Where each activity object ends in `activity`.
    activity_ends: Vec<usize>,
    /// The users, in the same order as `users`.
    ids: Vec<UserId>,
    /// Whose activity each object is.
    activity_ids: Vec<UserId>,
}

impl EncodedRoster {
    /// Encodes the online users, sorted by name, each with their activity
    /// ([`Activity::Away`], the default, is left out).
    pub fn new(online: &[(User, Activity)]) -> Self {
        let mut roster = EncodedRoster {
            ids: online.iter().map(|(u, _)| u.id).collect(),
            ..EncodedRoster::default()
        };
        for (user, activity) in online {
            push_json(&mut roster.users, &user_rows::row(user));
            roster.user_ends.push(roster.users.len());
            if *activity != Activity::Away {
                let activity = UserActivity {
                    user: user.id,
                    activity: *activity,
                };
                push_json(&mut roster.activity, &activity);
                roster.activity_ends.push(roster.activity.len());
                roster.activity_ids.push(user.id);
            }
        }
        roster
    }

    /// The `welcome` frame for `me`: the roster without `me`, and `me`'s
    /// conversations.
    pub fn welcome(&self, me: &User, conversations: &[ConversationSnapshot]) -> String {
        let skip = self.ids.iter().position(|id| *id == me.id);
        let skip_activity = self.activity_ids.iter().position(|id| *id == me.id);
        let mut out = String::with_capacity(self.users.len() + self.activity.len() + 256);
        out.push_str(r#"{"type":"welcome","protocol":"#);
        out.push_str(&PROTOCOL_VERSION.to_string());
        out.push_str(r#","me":"#);
        push_json(&mut out, me);
        out.push_str(r#","online":["#);
        join_skipping(&mut out, &self.users, &self.user_ends, skip);
        out.push_str(r#"],"conversations":"#);
        push_json(&mut out, conversations);
        // As serde writes it: an empty activity list is left out.
        if self.activity_ids.len() > usize::from(skip_activity.is_some()) {
            out.push_str(r#","activity":["#);
            join_skipping(&mut out, &self.activity, &self.activity_ends, skip_activity);
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// A `message` frame, the one the relay sends most by far, written
/// directly: the same bytes serde writes (a test holds the two together),
/// without serde's escaping pass over each key and over a text that needs
/// no escaping.
fn encode_message(conversation: ConversationId, message: &ChatMessage) -> String {
    let mut out = String::with_capacity(message.text.len() + 128);
    out.push_str(r#"{"type":"message","conversation":"#);
    push_u64(&mut out, conversation.0);
    out.push_str(r#","message":{"seq":"#);
    push_u64(&mut out, message.seq.0);
    out.push_str(r#","author":"#);
    push_u64(&mut out, message.author.0);
    out.push_str(r#","time":"#);
    push_u64(&mut out, message.time);
    out.push_str(r#","text":"#);
    push_json_str(&mut out, &message.text);
    out.push_str(r#","client_id":"#);
    push_u64(&mut out, message.client_id.0);
    out.push_str("}}");
    out
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `text` as a JSON string: quoted as it is when nothing in it
/// needs escaping (no `"`, `\` or control character), else escaped by serde.
fn push_json_str(out: &mut String, text: &str) {
    if needs_no_escape(text) {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        push_json(out, text);
    }
}

/// True when `text` holds no `"`, `\\` or control character: in JSON it
/// is itself between quotes.
fn needs_no_escape(text: &str) -> bool {
    // In blocks, so that the test of each block compiles to vector code.
    text.as_bytes().chunks(16).all(|block| {
        block
            .iter()
            .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
    })
}

/// Appends the JSON of `value`.
fn push_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    out.push_str(&serde_json::to_string(value).expect("protocol values always serialize"));
}

/// Appends the objects of `joined` (each ending at its `ends` entry) with
/// commas between, leaving out the one at `skip`.
fn join_skipping(out: &mut String, joined: &str, ends: &[usize], skip: Option<usize>) {
    let mut start = 0;
    let mut first = true;
    for (i, &end) in ends.iter().enumerate() {
        if Some(i) != skip {
            if !first {
                out.push(',');
            }
            out.push_str(&joined[start..end]);
            first = false;
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user whose colour is not in the palette.
    fn alice() -> User {
        User {
            id: UserId(1),
            name: "alice".into(),
            color: "#3557d4".into(),
        }
    }

    /// A user with a palette colour (SPEC S6), `PALETTE[7]`.
    fn bob() -> User {
        User {
            id: UserId(2),
            name: "bob".into(),
            color: "#1d4ed8".into(),
        }
    }

    fn message() -> ChatMessage {
        ChatMessage {
            seq: Seq(3),
            author: UserId(1),
            time: 1_700_000_000_000,
            text: "hi <b>\n".into(),
            client_id: ClientMsgId(77),
        }
    }

    fn client_samples() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume: vec![],
            },
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume: vec![Resume {
                    conversation: ConversationId(5),
                    last_seq: Seq(2),
                }],
            },
            ClientMsg::Ping { nonce: 7 },
            ClientMsg::Open {
                with: vec![UserId(2), UserId(3)],
            },
            ClientMsg::Send {
                conversation: ConversationId(5),
                client_id: ClientMsgId(77),
                text: "hi".into(),
            },
            ClientMsg::Leave {
                conversation: ConversationId(5),
            },
            ClientMsg::Typing {
                conversation: ConversationId(5),
            },
            ClientMsg::Marks {
                conversation: ConversationId(5),
                delivered: Seq(4),
                read: Seq(3),
            },
            ClientMsg::Activity { active: true },
        ]
    }

    fn server_samples() -> Vec<ServerMsg> {
        let snapshot = ConversationSnapshot {
            id: ConversationId(5),
            participants: vec![alice()],
            messages: vec![message()],
            gap: false,
            ended: None,
            marks: vec![],
        };
        let ended = ConversationSnapshot {
            ended: Some(Ending {
                user: UserId(2),
                reason: Departure::Left,
            }),
            messages: vec![],
            marks: vec![Marks {
                user: UserId(1),
                delivered: Seq(3),
                read: Seq(2),
            }],
            ..snapshot.clone()
        };
        vec![
            ServerMsg::Welcome {
                protocol: PROTOCOL_VERSION,
                me: alice(),
                online: vec![bob()],
                conversations: vec![snapshot.clone(), ended],
                activity: vec![],
            },
            ServerMsg::Pong { nonce: 7 },
            ServerMsg::Presence {
                joined: vec![alice(), bob()],
                left: vec![UserId(9)],
                activity: vec![UserActivity {
                    user: UserId(1),
                    activity: Activity::Away,
                }],
            },
            ServerMsg::Started {
                conversation: snapshot,
            },
            ServerMsg::Opened {
                conversation: ConversationId(5),
            },
            ServerMsg::Message {
                conversation: ConversationId(5),
                message: message(),
            },
            ServerMsg::Departed {
                conversation: ConversationId(5),
                user: UserId(2),
                reason: Departure::Left,
            },
            ServerMsg::Ended {
                conversation: ConversationId(5),
                ending: Ending {
                    user: UserId(2),
                    reason: Departure::WentOffline,
                },
            },
            ServerMsg::Closed {
                conversation: ConversationId(5),
            },
            ServerMsg::Typing {
                conversation: ConversationId(5),
                user: UserId(2),
                active: true,
            },
            ServerMsg::Marks {
                conversation: ConversationId(5),
                marks: Marks {
                    user: UserId(2),
                    delivered: Seq(3),
                    read: Seq(3),
                },
            },
            ServerMsg::error(ErrorKind::BadFrame, "invalid frame: expected value"),
            ServerMsg::Error {
                kind: ErrorKind::SlowDown,
                message: "slow down".into(),
                client_id: Some(ClientMsgId(77)),
            },
        ]
    }

    #[test]
    fn every_frame_survives_a_round_trip() {
        for msg in client_samples() {
            assert_eq!(ClientMsg::decode(&msg.encode()), Ok(msg));
        }
        for msg in server_samples() {
            assert_eq!(ServerMsg::decode(&msg.encode()), Ok(msg));
        }
    }

    /// The welcome written around a roster encoded once is the welcome
    /// serde writes, whether the newcomer is in the roster or not, with
    /// palette colours (SPEC S6) and others in its rows.
    #[test]
    fn u1_s6_a_welcome_around_an_encoded_roster_is_the_welcome_serde_writes() {
        let user = |id: u64, name: &str, color: &str| User {
            id: UserId(id),
            name: name.into(),
            color: color.into(),
        };
        let everyone = [
            (user(1, "alice", PALETTE[0]), Activity::Active),
            (user(2, "Bob", "#123456"), Activity::Away),
            (
                user(3, "carol \"\u{e9}", PALETTE[11]),
                Activity::Reconnecting,
            ),
        ];
        // The rows as written: palette colours as indexes, others as they are.
        let full = EncodedRoster::new(&everyone).welcome(&user(9, "zed", "#000000"), &[]);
        for row in [
            r#"[1,"alice",0]"#,
            r##"[2,"Bob","#123456"]"##,
            r#"[3,"carol \"é",11]"#,
        ] {
            assert!(full.contains(row), "{row} in {full}");
        }
        let conversations = match &server_samples()[0] {
            ServerMsg::Welcome { conversations, .. } => conversations.clone(),
            _ => unreachable!(),
        };
        for size in 0..=everyone.len() {
            let online = &everyone[..size];
            let roster = EncodedRoster::new(online);
            for me in [
                user(1, "alice", PALETTE[0]),
                user(2, "Bob", "#123456"),
                user(3, "x", PALETTE[11]),
                user(9, "zed", "#000000"),
            ] {
                for conversations in [vec![], conversations.clone()] {
                    let others: Vec<&(User, Activity)> =
                        online.iter().filter(|(u, _)| u.id != me.id).collect();
                    let expected = ServerMsg::Welcome {
                        protocol: PROTOCOL_VERSION,
                        me: me.clone(),
                        online: others.iter().map(|(u, _)| u.clone()).collect(),
                        conversations: conversations.clone(),
                        activity: others
                            .iter()
                            .filter(|(_, a)| *a != Activity::Away)
                            .map(|(u, a)| UserActivity {
                                user: u.id,
                                activity: *a,
                            })
                            .collect(),
                    }
                    .encode();
                    let written = roster.welcome(&me, &conversations);
                    assert_eq!(written, expected);
                    // The page reads back what the relay wrote.
                    assert_eq!(
                        crate::wire::decode_server(&written).map(|m| m.encode()),
                        Ok(expected)
                    );
                }
            }
        }
    }

    /// Online lists carry each user as a row, the rest of the protocol as
    /// objects; the page and serde read the rows alike.
    #[test]
    fn u1_u4_online_lists_carry_users_as_rows() {
        let welcome = ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: alice(),
            online: vec![User {
                id: UserId(2),
                name: "b\"ob]".into(),
                color: "#123456".into(),
            }],
            conversations: vec![],
            activity: vec![],
        };
        let text = welcome.encode();
        assert_eq!(
            text,
            r##"{"type":"welcome","protocol":3,"me":{"id":1,"name":"alice","color":"#3557d4"},"online":[[2,"b\"ob]","#123456"]],"conversations":[]}"##
        );
        assert_eq!(ServerMsg::decode(&text).ok(), Some(welcome.clone()));
        assert_eq!(crate::wire::decode_server(&text), Ok(welcome));
    }

    /// SPEC S6 on the wire (U1, U4): a row carries a palette colour as its
    /// index and any other colour as its CSS string; `me` and a
    /// conversation's participants stay objects with the CSS colour. Both
    /// decoders read the rows back to the same users.
    #[test]
    fn s6_u1_u4_rows_carry_palette_colours_as_indexes() {
        let me = User {
            id: UserId(7),
            name: "carol".into(),
            color: PALETTE[11].into(),
        };
        let bench = User {
            id: UserId(1234),
            name: "bench01234".into(),
            color: "#b91c1c".into(),
        };
        let other = User {
            id: UserId(2),
            name: "b\"ob]".into(),
            color: "#123456".into(),
        };
        let welcome = ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            me: me.clone(),
            online: vec![other.clone(), bench.clone()],
            conversations: vec![ConversationSnapshot {
                id: ConversationId(5),
                participants: vec![me, bench.clone()],
                messages: vec![],
                gap: false,
                ended: None,
                marks: vec![],
            }],
            activity: vec![],
        };
        let presence = ServerMsg::Presence {
            joined: vec![other, bench],
            left: vec![UserId(9)],
            activity: vec![],
        };
        for (msg, golden) in [
            (
                &welcome,
                r##"{"type":"welcome","protocol":3,"me":{"id":7,"name":"carol","color":"#be185d"},"online":[[2,"b\"ob]","#123456"],[1234,"bench01234",0]],"conversations":[{"id":5,"participants":[{"id":7,"name":"carol","color":"#be185d"},{"id":1234,"name":"bench01234","color":"#b91c1c"}],"messages":[],"gap":false}]}"##,
            ),
            (
                &presence,
                r##"{"type":"presence","joined":[[2,"b\"ob]","#123456"],[1234,"bench01234",0]],"left":[9]}"##,
            ),
        ] {
            let text = msg.encode();
            assert_eq!(text, golden);
            assert_eq!(ServerMsg::decode(&text).as_ref(), Ok(msg), "{text}");
            assert_eq!(
                crate::wire::decode_server(&text).as_ref(),
                Ok(msg),
                "{text}"
            );
        }
    }

    /// SPEC S6: every palette colour is written as its own index and read
    /// back as itself by both decoders; a colour that matches a palette
    /// entry only ignoring case is not one of them and stays a string.
    #[test]
    fn s6_u4_every_palette_colour_round_trips_as_its_index() {
        let presence = |color: &str| ServerMsg::Presence {
            joined: vec![User {
                id: UserId(5),
                name: "x".into(),
                color: color.into(),
            }],
            left: vec![],
            activity: vec![],
        };
        let mut cases: Vec<(String, String)> = PALETTE
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i.to_string()))
            .collect();
        for css in ["#B91C1C", "#b91c1c ", "red", ""] {
            cases.push((css.into(), format!("\"{css}\"")));
        }
        for (css, written) in cases {
            let msg = presence(&css);
            let text = msg.encode();
            assert_eq!(
                text,
                format!(r#"{{"type":"presence","joined":[[5,"x",{written}]]}}"#)
            );
            assert_eq!(ServerMsg::decode(&text), Ok(msg.clone()), "{text}");
            assert_eq!(crate::wire::decode_server(&text), Ok(msg), "{text}");
        }
    }

    /// U1, U4, S6: a row that is not `[id, name, colour]`, with the colour
    /// an index below `PALETTE.len()` or a string, is refused by serde and
    /// by the page's codec alike, in `welcome` and in `presence`.
    #[test]
    fn u1_u4_s6_bad_rows_are_refused_by_both_decoders() {
        let frames = |row: &str| {
            [
                format!(
                    r##"{{"type":"welcome","protocol":{PROTOCOL_VERSION},"me":{{"id":1,"name":"alice","color":"#3557d4"}},"online":[{row}],"conversations":[]}}"##
                ),
                format!(r#"{{"type":"presence","joined":[{row}]}}"#),
            ]
        };
        // The frames around the rows are sound: good rows are read.
        for good in [
            r##"[2,"bob","#123456"]"##.to_string(),
            r#"[2,"bob",0]"#.to_string(),
            format!(r#"[2,"bob",{}]"#, PALETTE.len() - 1),
        ] {
            for text in frames(&good) {
                assert!(ServerMsg::decode(&text).is_ok(), "{text}");
                assert!(crate::wire::decode_server(&text).is_ok(), "{text}");
            }
        }
        let out_of_range = [
            format!(r#"[2,"bob",{}]"#, PALETTE.len()),
            format!(r#"[2,"bob",{}]"#, u64::MAX),
        ];
        for bad in &out_of_range {
            for text in frames(bad) {
                let serde = ServerMsg::decode(&text).expect_err(&text);
                assert!(serde.contains("out of range"), "{serde}");
                assert_eq!(
                    crate::wire::decode_server(&text),
                    Err("invalid frame: colour index out of range"),
                    "{text}"
                );
            }
        }
        let other = [
            r#"[2,"bob"]"#,
            r##"[2,"bob","#123456",4]"##,
            r#"[2,"bob",0,4]"#,
            r##"{"id":2,"name":"bob","color":"#123456"}"##,
            r##"["2","bob","#123456"]"##,
            r#"[2,"bob",-1]"#,
            r#"[2,"bob",1.5]"#,
            r#"[2,"bob",1e0]"#,
            r#"[2,"bob",18446744073709551616]"#,
            r#"[2,"bob",true]"#,
            r#"[2,"bob",null]"#,
            r#"[2,"bob",[0]]"#,
            r#"[2,"bob",{}]"#,
        ];
        for bad in other
            .iter()
            .copied()
            .chain(out_of_range.iter().map(String::as_str))
        {
            for text in frames(bad) {
                assert!(ServerMsg::decode(&text).is_err(), "{text}");
                assert!(crate::wire::decode_server(&text).is_err(), "{text}");
            }
        }
    }

    /// The exact JSON on the wire. A failure here means the protocol changed:
    /// bump [`PROTOCOL_VERSION`] if old clients can no longer talk to the relay.
    #[test]
    fn golden_json() {
        let client: Vec<String> = client_samples().iter().map(ClientMsg::encode).collect();
        assert_eq!(
            client,
            [
                r#"{"type":"hello","protocol":3}"#,
                r#"{"type":"hello","protocol":3,"resume":[{"conversation":5,"last_seq":2}]}"#,
                r#"{"type":"ping","nonce":7}"#,
                r#"{"type":"open","with":[2,3]}"#,
                r#"{"type":"send","conversation":5,"client_id":77,"text":"hi"}"#,
                r#"{"type":"leave","conversation":5}"#,
                r#"{"type":"typing","conversation":5}"#,
                r#"{"type":"marks","conversation":5,"delivered":4,"read":3}"#,
                r#"{"type":"activity","active":true}"#,
            ]
        );
        let user = r##"{"id":1,"name":"alice","color":"#3557d4"}"##;
        let msg = r#"{"seq":3,"author":1,"time":1700000000000,"text":"hi <b>\n","client_id":77}"#;
        let snap = format!(r#"{{"id":5,"participants":[{user}],"messages":[{msg}],"gap":false}}"#);
        let ended = format!(
            r#"{{"id":5,"participants":[{user}],"messages":[],"gap":false,"ended":{{"user":2,"reason":"left"}},"marks":[{{"user":1,"delivered":3,"read":2}}]}}"#
        );
        let server: Vec<String> = server_samples().iter().map(ServerMsg::encode).collect();
        assert_eq!(
            server,
            [
                format!(
                    r#"{{"type":"welcome","protocol":3,"me":{user},"online":[[2,"bob",7]],"conversations":[{snap},{ended}]}}"#
                ),
                r#"{"type":"pong","nonce":7}"#.to_string(),
                r##"{"type":"presence","joined":[[1,"alice","#3557d4"],[2,"bob",7]],"left":[9],"activity":[{"user":1,"activity":"away"}]}"##
                    .to_string(),
                format!(r#"{{"type":"started","conversation":{snap}}}"#),
                r#"{"type":"opened","conversation":5}"#.to_string(),
                format!(r#"{{"type":"message","conversation":5,"message":{msg}}}"#),
                r#"{"type":"departed","conversation":5,"user":2,"reason":"left"}"#.to_string(),
                r#"{"type":"ended","conversation":5,"ending":{"user":2,"reason":"went_offline"}}"#
                    .to_string(),
                r#"{"type":"closed","conversation":5}"#.to_string(),
                r#"{"type":"typing","conversation":5,"user":2,"active":true}"#.to_string(),
                r#"{"type":"marks","conversation":5,"marks":{"user":2,"delivered":3,"read":3}}"#
                    .to_string(),
                r#"{"type":"error","kind":"bad_frame","message":"invalid frame: expected value"}"#
                    .to_string(),
                r#"{"type":"error","kind":"slow_down","message":"slow down","client_id":77}"#
                    .to_string(),
            ]
        );
    }

    /// The relay's hand-written `message` frame is byte for byte serde's,
    /// whatever the text holds: every ASCII character, escapes and
    /// non-ASCII, at every length around the scan's 16-byte blocks, and
    /// the largest numbers.
    #[test]
    fn message_frames_are_encoded_as_serde_encodes_them() {
        let serde = |msg: &ServerMsg| serde_json::to_string(msg).unwrap();
        let frame = |conversation: u64, text: String| ServerMsg::Message {
            conversation: ConversationId(conversation),
            message: ChatMessage { text, ..message() },
        };
        let mut texts: Vec<String> = (0u8..=0x7f).map(|b| char::from(b).to_string()).collect();
        texts.extend(["", "é", "😀", "\u{2028}\u{2029}", "a\"b\\c", "\u{7f}"].map(String::from));
        for len in [15, 16, 17, 31, 32, 33, 100] {
            for at in [0, len / 2, len - 1] {
                for odd in ['"', '\\', '\n', '\u{1}', 'é'] {
                    let mut text: String = "x".repeat(len);
                    text.replace_range(at..=at, &odd.to_string());
                    texts.push(text);
                }
            }
        }
        for text in texts {
            let msg = frame(5, text);
            assert_eq!(msg.encode(), serde(&msg));
        }
        let msg = ServerMsg::Message {
            conversation: ConversationId(u64::MAX),
            message: ChatMessage {
                seq: Seq(u64::MAX),
                author: UserId(0),
                time: u64::MAX,
                text: "max".into(),
                client_id: ClientMsgId(u64::MAX),
            },
        };
        assert_eq!(msg.encode(), serde(&msg));
    }

    /// The page's codec (`crate::wire`) writes the same bytes as serde and
    /// reads every frame serde writes.
    #[test]
    fn the_pages_codec_agrees_with_serde() {
        for msg in client_samples() {
            assert_eq!(crate::wire::encode_client(&msg), msg.encode());
        }
        let text = "quote \" backslash \\ controls \u{0}\u{1f}\t\n é 😀".to_string();
        let send = ClientMsg::Send {
            conversation: ConversationId(u64::MAX),
            client_id: ClientMsgId(9_007_199_254_740_993),
            text: text.clone(),
        };
        assert_eq!(crate::wire::encode_client(&send), send.encode());
        let mut samples = server_samples();
        samples.push(ServerMsg::Message {
            conversation: ConversationId(u64::MAX),
            message: ChatMessage { text, ..message() },
        });
        for msg in samples {
            let json = msg.encode();
            assert_eq!(crate::wire::decode_server(&json), Ok(msg.clone()), "{json}");
            let pretty = serde_json::to_string_pretty(&msg).unwrap();
            assert_eq!(crate::wire::decode_server(&pretty), Ok(msg), "{pretty}");
            // Every cut-off frame is refused, never a panic.
            for end in 0..json.len() {
                if let Some(cut) = json.get(..end) {
                    assert!(crate::wire::decode_server(cut).is_err(), "{cut}");
                }
            }
        }
    }

    /// `count` copies of `frame`, each with a few random edits (characters
    /// replaced, dropped, inserted, spans repeated), from a fixed seed.
    fn mutations(frame: &str, count: usize) -> Vec<String> {
        const ALPHABET: &[char] = &[
            '{', '}', '[', ']', '"', ':', ',', '\\', '-', '+', '.', 'e', 'E', '0', '1', '9', ' ',
            '\n', 'n', 't', 'u', 'l', 'a', 'f', 's', 'é', '😀', '\u{0}',
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound.max(1) as u64) as usize
        };
        let original: Vec<char> = frame.chars().collect();
        (0..count)
            .map(|_| {
                let mut text = original.clone();
                for _ in 0..1 + next(3) {
                    let at = next(text.len());
                    match next(4) {
                        0 => text[at] = ALPHABET[next(ALPHABET.len())],
                        1 => {
                            text.remove(at);
                        }
                        2 => text.insert(at, ALPHABET[next(ALPHABET.len())]),
                        _ => {
                            let end = (at + 1 + next(12)).min(text.len());
                            let span: Vec<char> = text[at..end].to_vec();
                            text.splice(at..at, span);
                        }
                    }
                    if text.is_empty() {
                        text = original.clone();
                    }
                }
                text.into_iter().collect()
            })
            .collect()
    }

    /// SPEC L7 for the page: frames mutated at random never make the page's
    /// codec panic, and whatever serde reads as a frame, the page's codec
    /// reads as the same frame.
    #[test]
    fn mutated_frames_never_panic_the_pages_codec_and_it_agrees_with_serde() {
        let (mut agreed, mut refused) = (0, 0);
        for sample in server_samples() {
            for text in mutations(&sample.encode(), 2_000) {
                let ours = crate::wire::decode_server(&text);
                match ServerMsg::decode(&text) {
                    Ok(theirs) => {
                        assert_eq!(ours, Ok(theirs), "{text}");
                        agreed += 1;
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(
            agreed > 0 && refused > 0,
            "{agreed} read, {refused} refused"
        );
    }

    /// The relay's one-pass reading of `send` frames gives what serde's
    /// reading of the tagged enum gives, frame or error, for send frames
    /// as the page writes them, with escapes, and mutated at random (tags
    /// and fields renamed, duplicated, cut off, reordered by the edits).
    #[test]
    fn send_frames_read_in_one_pass_as_serde_reads_them() {
        let serde = |text: &str| {
            serde_json::from_str::<ClientMsg>(text).map_err(|e| format!("invalid frame: {e}"))
        };
        let sends = [
            r#"{"type":"send","conversation":5,"client_id":77,"text":"hi"}"#.to_string(),
            r#"{"type":"send","conversation":5,"text":"hi","client_id":77}"#.to_string(),
            r#"{"type":"send","conversation":5,"client_id":77,"text":"hi","type":"send"}"#
                .to_string(),
            r#"{"type":"send","conversation":5,"client_id":77,"text":"hi","extra":1}"#.to_string(),
            r#"{"type":"send","conversation":5,"client_id":77}"#.to_string(),
            r#"{"type":"send","conversation":05,"client_id":77,"text":"hi"}"#.to_string(),
            r#"{"type":"send","conversation":0,"client_id":0,"text":""}"#.to_string(),
            r#"{"type":"send","conversation":18446744073709551616,"client_id":1,"text":"a"}"#
                .to_string(),
            r#"{"type":"send","conversation":5,"client_id":7.0,"text":"a"}"#.to_string(),
            r#"{"type":"send","conversation":5,"client_id":77,"text":"a"} "#.to_string(),
            r#"{"type":"send","conversation":5,"client_id":77,"text":"a"}"}"#.to_string(),
            crate::wire::encode_client(&ClientMsg::Send {
                conversation: ConversationId(12),
                client_id: ClientMsgId(3_456),
                text: "plain words, é and 😀, as most messages are: ".repeat(3),
            }),
            r#"{"type":"sending","conversation":5,"client_id":77,"text":"hi"}"#.to_string(),
            crate::wire::encode_client(&ClientMsg::Send {
                conversation: ConversationId(u64::MAX),
                client_id: ClientMsgId(9_007_199_254_740_993),
                text: "quote \" backslash \\ controls \u{0}\u{1f}\t\n é 😀".into(),
            }),
        ];
        let (mut read, mut refused) = (0, 0);
        for frame in &sends {
            let mut texts = mutations(frame, 3_000);
            texts.push(frame.clone());
            for text in texts {
                let theirs = serde(&text);
                assert_eq!(ClientMsg::decode(&text), theirs, "{text}");
                if theirs.is_ok() {
                    read += 1;
                } else {
                    refused += 1;
                }
            }
        }
        assert!(
            read > 100 && refused > 100,
            "{read} read, {refused} refused"
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for text in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"type":"hello"}"#,
            r#"{"type":"hello","protocol":"1"}"#,
            r#"{"type":"hello","protocol":3,"extra":true}"#,
            r#"{"type":"send","conversation":-1,"client_id":1,"text":"x"}"#,
            r#"{"type":"open","with":"everyone"}"#,
            r#"{"type":"launch_missiles"}"#,
            "\u{0}\u{ffff}",
        ] {
            let err = ClientMsg::decode(text).expect_err(text);
            assert!(err.starts_with("invalid frame:"), "{err}");
        }
    }

    #[test]
    fn every_error_kind_has_a_distinct_name() {
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
