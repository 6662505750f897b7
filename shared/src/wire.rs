//! The page's codec for the frames of [`crate::protocol`] and the bodies of
//! [`crate::api`]: a small JSON reader and writer written out by hand.
//!
//! Why not serde: serde_json's generic code, monomorphised for every frame,
//! was the largest part of the browser app's WebAssembly. The relay keeps
//! serde ([`ClientMsg::decode`], [`ServerMsg::encode`]); the page uses this
//! module. The wire does not change: [`encode_client`] writes exactly the
//! bytes serde writes, and [`decode_server`] reads everything serde writes.
//! The tests in [`crate::protocol`] compare the two on every frame.
//!
//! The reader is lenient where leniency is harmless (unknown fields are
//! ignored) and strict where it matters: every required field must be
//! there with its type, strings must be valid, nesting is bounded by
//! [`MAX_DEPTH`]. Nothing in it panics on input.

use crate::api::{ApiError, Credentials};
use crate::protocol::user_rows;
use crate::protocol::{
    Activity, ChatMessage, ClientMsg, ClientMsgId, ConversationId, ConversationSnapshot, Departure,
    Ending, ErrorKind, Marks, Resume, Seq, ServerMsg, User, UserActivity, UserId,
};

/// The deepest nesting the reader accepts. Frames nest four levels deep;
/// anything much deeper is not a frame, and would cost stack to read.
pub const MAX_DEPTH: usize = 32;

/// Why a text could not be read as a frame, in words.
pub type Error = &'static str;

const SYNTAX: Error = "invalid frame: not valid JSON";
const SHAPE: Error = "invalid frame: unexpected shape";
const COLOR_OUT_OF_RANGE: Error = "invalid frame: colour index out of range";

/// A JSON value. Numbers keep only what the protocol needs: every number
/// in it is a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer that fits in 64 bits.
    Uint(u64),
    /// Any other number: negative, fractional, or too large.
    OtherNumber,
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, its fields in the order written.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The field `key` of an object (the first, if written twice).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads one JSON value; only whitespace may follow it.
pub fn parse(text: &str) -> Result<Value, Error> {
    let mut reader = Reader { text, pos: 0 };
    let value = reader.value(0)?;
    reader.skip_space();
    if reader.pos == text.len() {
        Ok(value)
    } else {
        Err(SYNTAX)
    }
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, Error> {
        let byte = self.peek().ok_or(SYNTAX)?;
        self.pos += 1;
        Ok(byte)
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), Error> {
        let end = self.pos + word.len();
        if self.text.as_bytes().get(self.pos..end) == Some(word.as_bytes()) {
            self.pos = end;
            Ok(())
        } else {
            Err(SYNTAX)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err("invalid frame: nested too deeply");
        }
        self.skip_space();
        match self.peek().ok_or(SYNTAX)? {
            b'n' => self.expect("null").map(|()| Value::Null),
            b't' => self.expect("true").map(|()| Value::Bool(true)),
            b'f' => self.expect("false").map(|()| Value::Bool(false)),
            b'"' => self.string().map(Value::String),
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.close(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.separator(b']')? {
                            break;
                        }
                    }
                }
                Ok(Value::Array(items))
            }
            b'{' => {
                self.pos += 1;
                let mut fields = Vec::new();
                if !self.close(b'}') {
                    loop {
                        self.skip_space();
                        if self.peek() != Some(b'"') {
                            return Err(SYNTAX);
                        }
                        let key = self.string()?;
                        self.skip_space();
                        if self.next()? != b':' {
                            return Err(SYNTAX);
                        }
                        fields.push((key, self.value(depth + 1)?));
                        if self.separator(b'}')? {
                            break;
                        }
                    }
                }
                Ok(Value::Object(fields))
            }
            _ => self.number(),
        }
    }

    /// After `[` or `{`: true (and consumed) if the container is empty.
    fn close(&mut self, end: u8) -> bool {
        self.skip_space();
        let empty = self.peek() == Some(end);
        if empty {
            self.pos += 1;
        }
        empty
    }

    /// After an item: `,` (false: more follow) or the end (true).
    fn separator(&mut self, end: u8) -> Result<bool, Error> {
        self.skip_space();
        match self.next()? {
            b',' => Ok(false),
            byte if byte == end => Ok(true),
            _ => Err(SYNTAX),
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut value: Option<u64> = Some(0);
        let mut digits = 0;
        while let Some(byte @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            digits += 1;
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(u64::from(byte - b'0')));
        }
        if digits == 0 {
            return Err(SYNTAX);
        }
        let mut whole = !negative;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            whole = false;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            whole = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(match value {
            Some(v) if whole => Value::Uint(v),
            _ => Value::OtherNumber,
        })
    }

    fn digits(&mut self) -> Result<(), Error> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            Err(SYNTAX)
        } else {
            Ok(())
        }
    }

    /// A string, the reader on its opening quote.
    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Both ends sit at ASCII bytes, so on character boundaries.
            out.push_str(self.text.get(start..self.pos).ok_or(SYNTAX)?);
            match self.next()? {
                b'"' => return Ok(out),
                b'\\' => {
                    let escaped = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(SYNTAX),
                    };
                    out.push(escaped);
                }
                _ => return Err(SYNTAX), // a raw control character
            }
        }
    }

    /// After `\u`: one character, from a surrogate pair if need be.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                self.expect("\\u")?;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(SYNTAX);
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            _ => first,
        };
        char::from_u32(code).ok_or(SYNTAX)
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = char::from(self.next()?).to_digit(16).ok_or(SYNTAX)?;
            code = code * 16 + digit;
        }
        Ok(code)
    }
}

/// A type read from a JSON value.
trait FromJson: Sized {
    fn from_json(value: &Value) -> Result<Self, Error>;
}

/// A field that must be there.
fn field<T: FromJson>(value: &Value, key: &str) -> Result<T, Error> {
    T::from_json(value.get(key).ok_or(SHAPE)?)
}

/// A field that may be missing or `null`.
fn optional<T: FromJson>(value: &Value, key: &str) -> Result<Option<T>, Error> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::from_json(v).map(Some),
    }
}

/// A list that serde leaves out when empty.
fn list<T: FromJson>(value: &Value, key: &str) -> Result<Vec<T>, Error> {
    Ok(optional(value, key)?.unwrap_or_default())
}

impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::Array(items) => items.iter().map(T::from_json).collect(),
            _ => Err(SHAPE),
        }
    }
}

impl FromJson for u64 {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::Uint(n) => Ok(*n),
            _ => Err(SHAPE),
        }
    }
}

impl FromJson for u32 {
    fn from_json(value: &Value) -> Result<Self, Error> {
        u32::try_from(u64::from_json(value)?).map_err(|_| SHAPE)
    }
}

impl FromJson for bool {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::Bool(b) => Ok(*b),
            _ => Err(SHAPE),
        }
    }
}

impl FromJson for String {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::String(s) => Ok(s.clone()),
            _ => Err(SHAPE),
        }
    }
}

macro_rules! id_from_json {
    ($($name:ident),*) => {$(
        impl FromJson for $name {
            fn from_json(value: &Value) -> Result<Self, Error> {
                u64::from_json(value).map($name)
            }
        }
    )*};
}
id_from_json!(UserId, ConversationId, Seq, ClientMsgId);

/// A unit enum written as its snake_case name.
fn named<T: Copy>(value: &Value, names: &[(&str, T)]) -> Result<T, Error> {
    let Value::String(s) = value else {
        return Err(SHAPE);
    };
    names
        .iter()
        .find(|(name, _)| name == s)
        .map(|(_, v)| *v)
        .ok_or(SHAPE)
}

impl FromJson for Departure {
    fn from_json(value: &Value) -> Result<Self, Error> {
        named(
            value,
            &[
                ("left", Departure::Left),
                ("went_offline", Departure::WentOffline),
            ],
        )
    }
}

impl FromJson for Activity {
    fn from_json(value: &Value) -> Result<Self, Error> {
        named(
            value,
            &[
                ("active", Activity::Active),
                ("away", Activity::Away),
                ("reconnecting", Activity::Reconnecting),
            ],
        )
    }
}

impl FromJson for ErrorKind {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::String(s) => ErrorKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == s)
                .ok_or(SHAPE),
            _ => Err(SHAPE),
        }
    }
}

impl FromJson for User {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(User {
            id: field(value, "id")?,
            name: field(value, "name")?,
            color: field(value, "color")?,
        })
    }
}

/// A user written as a row `[id, name, color]`, as the online lists of
/// `welcome` and `presence` carry them ([`crate::protocol::user_rows`]):
/// the colour is an index into [`crate::protocol::PALETTE`] or a CSS colour.
struct UserRow(User);

impl FromJson for UserRow {
    fn from_json(value: &Value) -> Result<Self, Error> {
        match value {
            Value::Array(items) => match items.as_slice() {
                [id, name, color] => Ok(UserRow(User {
                    id: UserId::from_json(id)?,
                    name: String::from_json(name)?,
                    color: row_color(color)?,
                })),
                _ => Err(SHAPE),
            },
            _ => Err(SHAPE),
        }
    }
}

/// A row's colour: the palette colour of an index, or a string as it is.
fn row_color(value: &Value) -> Result<String, Error> {
    match value {
        Value::Uint(index) => user_rows::palette_color(*index)
            .map(str::to_owned)
            .ok_or(COLOR_OUT_OF_RANGE),
        Value::String(css) => Ok(css.clone()),
        _ => Err(SHAPE),
    }
}

/// The users of a list of rows.
fn users(rows: Vec<UserRow>) -> Vec<User> {
    rows.into_iter().map(|UserRow(user)| user).collect()
}

impl FromJson for ChatMessage {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(ChatMessage {
            seq: field(value, "seq")?,
            author: field(value, "author")?,
            time: field(value, "time")?,
            text: field(value, "text")?,
            client_id: field(value, "client_id")?,
        })
    }
}

impl FromJson for UserActivity {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(UserActivity {
            user: field(value, "user")?,
            activity: field(value, "activity")?,
        })
    }
}

impl FromJson for Marks {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(Marks {
            user: field(value, "user")?,
            delivered: field(value, "delivered")?,
            read: field(value, "read")?,
        })
    }
}

impl FromJson for Ending {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(Ending {
            user: field(value, "user")?,
            reason: field(value, "reason")?,
        })
    }
}

impl FromJson for ConversationSnapshot {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(ConversationSnapshot {
            id: field(value, "id")?,
            participants: field(value, "participants")?,
            messages: field(value, "messages")?,
            gap: field(value, "gap")?,
            ended: optional(value, "ended")?,
            marks: list(value, "marks")?,
        })
    }
}

impl FromJson for ServerMsg {
    fn from_json(v: &Value) -> Result<Self, Error> {
        let tag: String = field(v, "type")?;
        Ok(match tag.as_str() {
            "welcome" => ServerMsg::Welcome {
                protocol: field(v, "protocol")?,
                me: field(v, "me")?,
                online: users(field(v, "online")?),
                conversations: field(v, "conversations")?,
                activity: list(v, "activity")?,
            },
            "pong" => ServerMsg::Pong {
                nonce: field(v, "nonce")?,
            },
            "presence" => ServerMsg::Presence {
                joined: users(list(v, "joined")?),
                left: list(v, "left")?,
                activity: list(v, "activity")?,
            },
            "started" => ServerMsg::Started {
                conversation: field(v, "conversation")?,
            },
            "opened" => ServerMsg::Opened {
                conversation: field(v, "conversation")?,
            },
            "message" => ServerMsg::Message {
                conversation: field(v, "conversation")?,
                message: field(v, "message")?,
            },
            "departed" => ServerMsg::Departed {
                conversation: field(v, "conversation")?,
                user: field(v, "user")?,
                reason: field(v, "reason")?,
            },
            "ended" => ServerMsg::Ended {
                conversation: field(v, "conversation")?,
                ending: field(v, "ending")?,
            },
            "closed" => ServerMsg::Closed {
                conversation: field(v, "conversation")?,
            },
            "typing" => ServerMsg::Typing {
                conversation: field(v, "conversation")?,
                user: field(v, "user")?,
                active: field(v, "active")?,
            },
            "marks" => ServerMsg::Marks {
                conversation: field(v, "conversation")?,
                marks: field(v, "marks")?,
            },
            "error" => ServerMsg::Error {
                kind: field(v, "kind")?,
                message: field(v, "message")?,
                client_id: optional(v, "client_id")?,
            },
            _ => return Err("invalid frame: unknown type"),
        })
    }
}

impl FromJson for ApiError {
    fn from_json(value: &Value) -> Result<Self, Error> {
        Ok(ApiError {
            error: field(value, "error")?,
            retry_after: optional(value, "retry_after")?,
        })
    }
}

/// Reads one frame from the relay.
pub fn decode_server(text: &str) -> Result<ServerMsg, Error> {
    ServerMsg::from_json(&parse(text)?)
}

/// Reads the user in the body of `/api/login` and `/api/me`.
pub fn decode_user(text: &str) -> Result<User, Error> {
    User::from_json(&parse(text)?)
}

/// Reads the body of an API error.
pub fn decode_api_error(text: &str) -> Result<ApiError, Error> {
    ApiError::from_json(&parse(text)?)
}

/// Writes one JSON object, field by field, as serde_json writes it.
struct Object {
    out: String,
    empty: bool,
}

impl Object {
    fn new() -> Self {
        Object {
            out: String::from("{"),
            empty: true,
        }
    }

    fn tagged(tag: &str) -> Self {
        let mut object = Object::new();
        object.string("type", tag);
        object
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    fn uint(&mut self, key: &str, n: u64) {
        self.key(key);
        push_uint(&mut self.out, n);
    }

    fn string(&mut self, key: &str, s: &str) {
        self.key(key);
        push_string(&mut self.out, s);
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Decimal digits of `n`.
fn push_uint(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[i..] {
        out.push(char::from(digit));
    }
}

/// A JSON string with serde_json's escapes: `"`, `\`, and control
/// characters (the five short forms, `\u00XX` for the rest).
fn push_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let byte = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[byte >> 4]));
                out.push(char::from(HEX[byte & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one frame for the relay: the same bytes as [`ClientMsg::encode`].
pub fn encode_client(msg: &ClientMsg) -> String {
    let object = match msg {
        ClientMsg::Hello { protocol, resume } => {
            let mut o = Object::tagged("hello");
            o.uint("protocol", u64::from(*protocol));
            if !resume.is_empty() {
                o.key("resume");
                o.out.push('[');
                for (
                    i,
                    Resume {
                        conversation,
                        last_seq,
                    },
                ) in resume.iter().enumerate()
                {
                    if i > 0 {
                        o.out.push(',');
                    }
                    let mut r = Object::new();
                    r.uint("conversation", conversation.0);
                    r.uint("last_seq", last_seq.0);
                    o.out.push_str(&r.finish());
                }
                o.out.push(']');
            }
            o
        }
        ClientMsg::Ping { nonce } => {
            let mut o = Object::tagged("ping");
            o.uint("nonce", *nonce);
            o
        }
        ClientMsg::Open { with } => {
            let mut o = Object::tagged("open");
            o.key("with");
            o.out.push('[');
            for (i, user) in with.iter().enumerate() {
                if i > 0 {
                    o.out.push(',');
                }
                push_uint(&mut o.out, user.0);
            }
            o.out.push(']');
            o
        }
        ClientMsg::Send {
            conversation,
            client_id,
            text,
        } => {
            let mut o = Object::tagged("send");
            o.uint("conversation", conversation.0);
            o.uint("client_id", client_id.0);
            o.string("text", text);
            o
        }
        ClientMsg::Leave { conversation } => {
            let mut o = Object::tagged("leave");
            o.uint("conversation", conversation.0);
            o
        }
        ClientMsg::Typing { conversation } => {
            let mut o = Object::tagged("typing");
            o.uint("conversation", conversation.0);
            o
        }
        ClientMsg::Marks {
            conversation,
            delivered,
            read,
        } => {
            let mut o = Object::tagged("marks");
            o.uint("conversation", conversation.0);
            o.uint("delivered", delivered.0);
            o.uint("read", read.0);
            o
        }
        ClientMsg::Activity { active } => {
            let mut o = Object::tagged("activity");
            o.key("active");
            o.out.push_str(if *active { "true" } else { "false" });
            o
        }
    };
    object.finish()
}

/// Writes the body of `POST /api/login`.
pub fn encode_credentials(credentials: &Credentials) -> String {
    let mut o = Object::new();
    o.string("name", &credentials.name);
    o.string("password", &credentials.password);
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        let mut every_ascii: String = (0u8..128).map(char::from).collect();
        every_ascii.push_str("é€😀\u{7f}\u{2028}");
        for text in [
            String::new(),
            every_ascii,
            "<b>\"quoted\"</b>\n\tline".into(),
        ] {
            let mut ours = String::new();
            push_string(&mut ours, &text);
            assert_eq!(ours, serde_json::to_string(&text).unwrap());
            assert_eq!(parse(&ours), Ok(Value::String(text)));
        }
    }

    #[test]
    fn numbers_are_written_as_serde_writes_them() {
        for n in [0, 1, 9, 10, 99, 1_700_000_000_000, u64::MAX] {
            let mut ours = String::new();
            push_uint(&mut ours, n);
            assert_eq!(ours, n.to_string());
            assert_eq!(parse(&ours), Ok(Value::Uint(n)));
        }
        for other in ["-1", "1.5", "1e3", "18446744073709551616"] {
            assert_eq!(parse(other), Ok(Value::OtherNumber), "{other}");
        }
    }

    #[test]
    fn escapes_serde_accepts_are_read() {
        let text = r#""\u00e9\ud83d\ude00\/\b\f\r\u0041""#;
        let expected: String = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text), Ok(Value::String(expected)));
        let spaced = " { \"a\" : [ 1 , true , null ] } ";
        assert_eq!(
            parse(spaced),
            Ok(Value::Object(vec![(
                "a".into(),
                Value::Array(vec![Value::Uint(1), Value::Bool(true), Value::Null])
            )]))
        );
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        let deep = "[".repeat(10_000);
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "\"unterminated",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\x\"",
            "\"\u{1}\"",
            "tru",
            "-",
            "1.",
            "1e",
            "{} {}",
            "nul\u{e9}",
            &deep,
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        assert_eq!(decode_server("{}"), Err(SHAPE));
        assert_eq!(
            decode_server(r#"{"type":"launch"}"#),
            Err("invalid frame: unknown type")
        );
        assert_eq!(decode_server(r#"{"type":"pong","nonce":-1}"#), Err(SHAPE));
    }

    #[test]
    fn api_bodies_match_serde() {
        let credentials = Credentials {
            name: "alice".into(),
            password: "p\"w\\".into(),
        };
        assert_eq!(
            encode_credentials(&credentials),
            serde_json::to_string(&credentials).unwrap()
        );
        let user = User {
            id: UserId(3),
            name: "bob".into(),
            color: "#123456".into(),
        };
        assert_eq!(
            decode_user(&serde_json::to_string(&user).unwrap()),
            Ok(user)
        );
        for error in [
            ApiError {
                error: "Wrong name or password".into(),
                retry_after: None,
            },
            ApiError {
                error: "Too many attempts".into(),
                retry_after: Some(30),
            },
        ] {
            let json = serde_json::to_string(&error).unwrap();
            assert_eq!(decode_api_error(&json), Ok(error));
        }
    }
}
