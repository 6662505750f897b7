//! The fuzz harness (SPEC L7: no input, however malformed, panics the relay).
//!
//! [`frames`] plays the transport's part around a real [`Core`]: it cuts
//! its input into client frames and does with each what `connection.rs`
//! and the hub do with a WebSocket text frame (`from_utf8`, then
//! [`ClientMsg::decode`], then [`Core::frame`]), encoding every frame the
//! relay would send. Like the core it does no I/O and reads no clock, so
//! the same input always takes the same path. The cargo-fuzz target in
//! `fuzz/` calls it; the tests below replay the committed seeds and a
//! fixed stream of pseudo-random inputs through it on every `cargo test`.
//!
//! # Input format
//!
//! The input is a list of lines separated by `\n` (byte 10); empty lines
//! are skipped. Each line is one *control byte* followed by the frame's
//! bytes, so a seed reads like `@{"type":"ping","nonce":1}`.
//!
//! The control byte `C` says who sends the frame and when:
//! - `C & 0b11` picks one of four tabs: 0 and 1 are alice's two tabs (one
//!   browser, one session), 2 is bob's, 3 is carol's.
//! - `(C >> 2) & 0b111` picks how far the clock moves first, from
//!   [`CLOCK_STEPS`] (0, 1 ms, 100 ms, 1 s, 5 s, 10 s, 30 s, 61 s); the
//!   core is then ticked, as the hub does every presence batch.
//! - `C >> 6 == 0b10`: the tab's socket drops first; `0b11`: its session
//!   ends first (sign-out closes every tab of that browser). Either way the
//!   frame is then the first frame of a new socket in that tab, so only a
//!   `hello` brings it back (with the `resume` it carries).
//!
//! Printable ASCII never drops a socket: `@` `A` `B` `C` send from tabs 0–3
//! at once, `D`–`G` after 1 ms, `H`–`K` after 100 ms, `L`–`O` after 1 s,
//! `P`–`S` after 5 s, `T`–`W` after 10 s (the offline grace), `X`–`[`
//! after 30 s and `\`–`_` after 61 s.
//!
//! As in the relay, a frame over [`MAX_FRAME_BYTES`] closes its socket,
//! bytes that are not UTF-8 are answered like a binary frame, and the tenth
//! invalid frame within [`VIOLATION_WINDOW`] closes the socket (SPEC L3).
//!
//! # Checked on every effect
//!
//! Besides not panicking: every [`Outbound::Send`] names at least one
//! recipient, each once, each a live connection; every frame encodes and
//! decodes back to an equal value; errors and resent messages go only to
//! the sender; a message's author is its sender and new sequence numbers
//! have no gaps; conversation frames reach participants only (SPEC L2); a
//! welcome is addressed to its `me`, is written around the shared roster
//! exactly as serde writes it whole, and neither it nor a presence diff
//! names the recipient (SPEC U1).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use shared::protocol::{
    ClientMsg, ConversationId, EncodedRoster, ErrorKind, Resume, ServerMsg, User, UserId,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

use crate::connection::{MAX_VIOLATIONS, VIOLATION_WINDOW};
use crate::core::{ConnId, Core, Limits, Millis, Outbound, SessionId};

/// The line separator of the input.
pub const SEPARATOR: u8 = b'\n';

/// How far the clock moves before a frame, chosen by bits 2–4 of its
/// control byte: around the presence batch, the typing interval and expiry,
/// the offline grace and the invalid-frame window.
pub const CLOCK_STEPS: [Millis; 8] = [0, 1, 100, 1_000, 5_000, 10_000, 30_000, 61_000];

/// The longest input the fuzzer makes (`cargo xtask fuzz` passes it as
/// `-max_len`): room for one message of [`shared::protocol::MAX_MESSAGE_CHARS`]
/// ASCII characters, short enough to keep the runs quick. Every committed
/// seed fits, so the fuzzer never cuts one short.
pub const MAX_INPUT_BYTES: usize = 4096;

/// The harness's clock at the start, in Unix milliseconds.
const START: Millis = 1_700_000_000_000;

/// Feeds one fuzz input through a fresh relay core (see the module docs
/// for the format). Panics only if the relay breaks one of its rules.
pub fn frames(data: &[u8]) {
    let mut relay = Relay::new();
    for line in data.split(|b| *b == SEPARATOR) {
        if let Some((&control, frame)) = line.split_first() {
            relay.step(control, frame);
        }
    }
    relay.finish();
}

/// One browser tab: a socket that may or may not have said `hello`.
#[derive(Debug)]
struct Tab {
    user: User,
    session: SessionId,
    /// Set once the socket has said `hello` and the core knows it.
    conn: Option<ConnId>,
    /// Invalid frames on this socket, for SPEC L3.
    violations: VecDeque<Millis>,
}

/// The core plus what the transport knows: tabs, the clock, and what the
/// recipients have been told so far (for the invariants).
#[derive(Debug)]
struct Relay {
    core: Core,
    now: Millis,
    tabs: Vec<Tab>,
    next_conn: u64,
    next_session: u64,
    /// Live connections and their users, as the hub sees them.
    live: BTreeMap<ConnId, UserId>,
    /// Everyone who was ever in each conversation, from `started`.
    members: HashMap<ConversationId, BTreeSet<UserId>>,
    /// The last sequence number stamped in each conversation.
    last_seq: HashMap<ConversationId, u64>,
}

/// A user: odd ids have a palette colour (an index in online-list rows),
/// even ids one outside it (a string there), so the harness's encoded
/// welcomes carry both.
fn user(id: u64, name: &str) -> User {
    let palette = shared::protocol::PALETTE;
    let color = if id % 2 == 1 {
        palette[id as usize % palette.len()]
    } else {
        "#3557d4"
    };
    User {
        id: UserId(id),
        name: name.to_string(),
        color: color.to_string(),
    }
}

impl Relay {
    /// Three users on four tabs, a dialog (conversation 1) and a group
    /// (conversation 2), presence sent out.
    fn new() -> Self {
        let (alice, bob, carol) = (user(1, "alice"), user(2, "Bob"), user(3, "carol"));
        let tab = |user: &User, session| Tab {
            user: user.clone(),
            session: SessionId(session),
            conn: None,
            violations: VecDeque::new(),
        };
        let mut relay = Relay {
            core: Core::new(Limits::default()),
            now: START,
            tabs: vec![tab(&alice, 1), tab(&alice, 1), tab(&bob, 2), tab(&carol, 3)],
            next_conn: 1,
            next_session: 4,
            live: BTreeMap::new(),
            members: HashMap::new(),
            last_seq: HashMap::new(),
        };
        for tab in 0..relay.tabs.len() {
            relay.connect(tab, &[]);
        }
        let opens = [
            (0, vec![bob.id]),             // conversation 1: alice and bob
            (2, vec![alice.id, carol.id]), // conversation 2: the three of them
        ];
        for (tab, with) in opens {
            let conn = relay.tabs[tab].conn.expect("every tab starts connected");
            relay.core.frame(conn, ClientMsg::Open { with }, relay.now);
            relay.drain(Some(tab));
        }
        assert!(relay.members.contains_key(&ConversationId(1)));
        assert!(relay.members.contains_key(&ConversationId(2)));
        relay.tick(CLOCK_STEPS[2]);
        relay
    }

    /// One line of input.
    fn step(&mut self, control: u8, frame: &[u8]) {
        let tab = usize::from(control & 0b11);
        self.tick(CLOCK_STEPS[usize::from((control >> 2) & 0b111)]);
        match control >> 6 {
            0b10 => self.drop_socket(tab),
            0b11 => self.end_session(tab),
            _ => {}
        }
        if frame.len() > MAX_FRAME_BYTES {
            // The transport refuses it and closes with 1009 (SPEC L3).
            return self.drop_socket(tab);
        }
        // What `connection.rs` does with a frame: decode, or answer and count.
        let decoded = match std::str::from_utf8(frame) {
            Ok(text) => ClientMsg::decode(text),
            Err(_) => Err("binary frames are not part of the protocol; send JSON text".to_string()),
        };
        match decoded {
            Err(problem) => self.violation(tab, &problem),
            Ok(ClientMsg::Hello { protocol, resume }) => {
                if self.tabs[tab].conn.is_some() {
                    self.answer(ErrorKind::HelloRequired, "hello was already said");
                } else if protocol != PROTOCOL_VERSION {
                    self.answer(ErrorKind::UnsupportedProtocol, "wrong protocol");
                } else {
                    self.connect(tab, &resume);
                }
            }
            Ok(msg) => match self.tabs[tab].conn {
                None => self.answer(ErrorKind::HelloRequired, "send hello first"),
                Some(conn) => {
                    self.core.frame(conn, msg, self.now);
                    self.drain(Some(tab));
                }
            },
        }
    }

    /// Moves the clock and ticks the core, as the hub's timer does.
    fn tick(&mut self, by: Millis) {
        self.now += by;
        self.core.tick(self.now);
        self.drain(None);
    }

    /// The tab's socket says `hello`: a new connection (a new number, as
    /// the hub gives every socket).
    fn connect(&mut self, tab: usize, resume: &[Resume]) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let Tab { user, session, .. } = &self.tabs[tab];
        self.live.insert(conn, user.id);
        self.core
            .connect(conn, *session, user.clone(), resume, self.now);
        self.tabs[tab].conn = Some(conn);
        self.drain(Some(tab));
    }

    /// The socket is gone; the tab waits for a new one's `hello`.
    fn drop_socket(&mut self, tab: usize) {
        let tab = &mut self.tabs[tab];
        tab.violations.clear();
        if let Some(conn) = tab.conn.take() {
            self.live.remove(&conn);
            self.core.disconnect(conn, self.now);
        }
        self.drain(None);
    }

    /// The tab's browser signs out: the core closes its tabs (SPEC S5); the
    /// browser signs in again later with a new session.
    fn end_session(&mut self, tab: usize) {
        let ended = self.tabs[tab].session;
        self.core.end_session(ended, self.now);
        self.drain(None);
        let fresh = SessionId(self.next_session);
        self.next_session += 1;
        for tab in self.tabs.iter_mut().filter(|t| t.session == ended) {
            assert!(tab.conn.is_none(), "a signed-out tab was left open");
            tab.session = fresh;
            tab.violations.clear();
        }
    }

    /// An invalid frame: an error frame, and the socket closes at the
    /// tenth within the window (SPEC L3).
    fn violation(&mut self, tab: usize, problem: &str) {
        self.answer(ErrorKind::BadFrame, problem);
        let now = self.now;
        let window = millis(VIOLATION_WINDOW);
        let violations = &mut self.tabs[tab].violations;
        violations.push_back(now);
        while violations.front().is_some_and(|t| now - t > window) {
            violations.pop_front();
        }
        if violations.len() >= MAX_VIOLATIONS {
            self.drop_socket(tab);
        }
    }

    /// An error the connection answers by itself, without the core.
    fn answer(&mut self, kind: ErrorKind, message: &str) {
        round_trip(&ServerMsg::error(kind, message));
    }

    /// Carries out the core's effects, checking each (see the module docs).
    /// `sender` is the tab whose event produced them, if any.
    fn drain(&mut self, sender: Option<usize>) {
        let sender = sender.map(|tab| (self.tabs[tab].conn, self.tabs[tab].user.id));
        loop {
            let outbound = self.core.take_outbound();
            if outbound.is_empty() {
                break;
            }
            for effect in outbound {
                match effect {
                    Outbound::Send { to, msg } => self.check_send(&to, &msg, sender),
                    Outbound::Welcome { conn, welcome } => {
                        let msg = welcome.to_msg();
                        // The hub writes welcomes around the roster encoded once.
                        let encoded = EncodedRoster::new(&welcome.roster.online)
                            .welcome(&welcome.me, &welcome.conversations);
                        assert_eq!(encoded, msg.encode(), "the roster's welcome differs");
                        self.check_send(&[conn], &msg, sender);
                    }
                    Outbound::Close { conn, .. } => {
                        assert!(self.live.remove(&conn).is_some(), "closed {conn:?} twice");
                        // The socket closes; its reader tells the hub.
                        if let Some(tab) = self.tabs.iter_mut().find(|t| t.conn == Some(conn)) {
                            tab.conn = None;
                            tab.violations.clear();
                        }
                        self.core.disconnect(conn, self.now);
                    }
                }
            }
        }
        assert_eq!(
            self.core.connection_count(),
            self.live.len(),
            "the core and the transport disagree on who is connected"
        );
    }

    fn check_send(
        &mut self,
        to: &[ConnId],
        msg: &ServerMsg,
        sender: Option<(Option<ConnId>, UserId)>,
    ) {
        assert!(!to.is_empty(), "a frame for nobody: {msg:?}");
        let unique: BTreeSet<ConnId> = to.iter().copied().collect();
        assert_eq!(unique.len(), to.len(), "a recipient twice: {to:?} {msg:?}");
        let users: Vec<UserId> = to
            .iter()
            .map(|conn| {
                *self
                    .live
                    .get(conn)
                    .unwrap_or_else(|| panic!("a frame for {conn:?}, not connected: {msg:?}"))
            })
            .collect();
        round_trip(msg);
        let only_sender = || {
            let (conn, _) = sender.expect("a reply outside any request");
            assert_eq!(to, [conn.expect("a reply to a closed tab")], "{msg:?}");
        };
        match msg {
            ServerMsg::Error { .. } | ServerMsg::Pong { .. } | ServerMsg::Opened { .. } => {
                only_sender();
            }
            ServerMsg::Welcome {
                me,
                online,
                conversations,
                ..
            } => {
                only_sender();
                assert_eq!(users, [me.id], "a welcome for someone else");
                assert!(online.iter().all(|u| u.id != me.id), "welcome lists me");
                for snapshot in conversations {
                    let known = &self.members[&snapshot.id];
                    assert!(snapshot.participants.iter().any(|u| u.id == me.id));
                    assert!(snapshot.participants.iter().all(|u| known.contains(&u.id)));
                }
            }
            ServerMsg::Presence {
                joined,
                left,
                activity,
            } => {
                for user in &users {
                    assert!(joined.iter().all(|u| u.id != *user), "presence names me");
                    assert!(left.iter().all(|u| u != user), "presence names me");
                    assert!(
                        activity.iter().all(|a| a.user != *user),
                        "presence names me"
                    );
                }
            }
            ServerMsg::Started { conversation } => {
                let ids: Vec<UserId> = conversation.participants.iter().map(|u| u.id).collect();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "participants unsorted");
                let fresh = self
                    .members
                    .insert(conversation.id, ids.iter().copied().collect())
                    .is_none();
                assert!(fresh, "conversation {} started twice", conversation.id);
                self.last_seq.insert(conversation.id, 0);
                self.check_members(conversation.id, &users, msg);
            }
            ServerMsg::Message {
                conversation,
                message,
            } => {
                let (_, author) = sender.expect("a message outside any request");
                assert_eq!(message.author, author, "a message under another name");
                assert!(message.time <= self.now);
                let last = self.last_seq.entry(*conversation).or_insert(0);
                if message.seq.0 <= *last {
                    only_sender(); // a resend, confirmed to its tab only (SPEC C6)
                } else {
                    assert_eq!(message.seq.0, *last + 1, "a gap in the sequence");
                    *last = message.seq.0;
                }
                self.check_members(*conversation, &users, msg);
            }
            ServerMsg::Departed { conversation, .. }
            | ServerMsg::Ended { conversation, .. }
            | ServerMsg::Closed { conversation }
            | ServerMsg::Typing { conversation, .. }
            | ServerMsg::Marks { conversation, .. } => {
                self.check_members(*conversation, &users, msg);
            }
        }
    }

    /// SPEC L2: only participants hear of a conversation.
    fn check_members(&self, conversation: ConversationId, users: &[UserId], msg: &ServerMsg) {
        let members = self
            .members
            .get(&conversation)
            .unwrap_or_else(|| panic!("a frame about an unknown conversation: {msg:?}"));
        assert!(
            users.iter().all(|u| members.contains(u)),
            "an outsider hears of conversation {conversation}: {msg:?}"
        );
    }

    /// Lets every grace period and typist expire: the state must wind down.
    fn finish(&mut self) {
        for tab in 0..self.tabs.len() {
            self.drop_socket(tab);
        }
        self.tick(CLOCK_STEPS[7]);
        assert_eq!(self.core.online_count(), 0, "users online with no tab");
        assert_eq!(
            self.core.conversation_count(),
            0,
            "conversations outlive everyone"
        );
    }
}

/// Every frame the relay sends must read back as itself.
fn round_trip(msg: &ServerMsg) {
    let text = msg.encode();
    match ServerMsg::decode(&text) {
        Ok(back) => assert_eq!(&back, msg, "{text}"),
        Err(e) => panic!("the relay sent a frame it cannot read: {e}: {text}"),
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The committed seeds: the fuzzer's starting corpus.
    fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/frames");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable seed folder").path())
            .filter(|path| path.is_file())
            .map(|path| {
                let bytes = std::fs::read(&path).expect("a readable seed");
                (path, bytes)
            })
            .collect();
        seeds.sort();
        seeds
    }

    #[test]
    fn fuzzing_replays_every_committed_seed() {
        let seeds = seeds();
        assert!(seeds.len() >= 20, "only {} seeds", seeds.len());
        for (path, bytes) in seeds {
            eprintln!("seed {}", path.display());
            assert!(
                bytes.len() <= MAX_INPUT_BYTES,
                "{} is too long",
                path.display()
            );
            frames(&bytes);
        }
    }

    /// xorshift64: a fixed stream of pseudo-random numbers, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Pieces the mutations splice in: the protocol's words and its edges.
    const PIECES: &[&str] = &[
        "\n",
        "\n@",
        "\nC",
        "\n\\",
        r#"{"type":"hello","protocol":3,"resume":[{"conversation":1,"last_seq":0}]}"#,
        r#"{"type":"send","conversation":1,"client_id":1,"text":"hi"}"#,
        r#"{"type":"open","with":[1,2,3]}"#,
        r#"{"type":"typing","conversation":2}"#,
        r#"{"type":"marks","conversation":2,"delivered":1,"read":1}"#,
        r#"{"type":"leave","conversation":1}"#,
        r#"{"type":"activity","active":true}"#,
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "0",
        "1e400",
        "null",
        "\"\\ud800\"",
        "[[[[[[[[[[",
        "}}}",
    ];

    /// One input: random bytes, or a committed seed with a few mutations.
    fn input(rng: &mut Rng, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
        if rng.below(4) == 0 {
            let len = rng.below(256);
            return (0..len).map(|_| rng.next() as u8).collect();
        }
        let mut data = seeds[rng.below(seeds.len())].1.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len() + 1);
            match rng.below(6) {
                0 if at < data.len() => data[at] ^= 1 << rng.below(8),
                1 => data.insert(at, rng.next() as u8),
                2 => {
                    let end = (at + rng.below(16)).min(data.len());
                    data.drain(at..end);
                }
                3 => {
                    let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                    data.splice(at..at, piece.iter().copied());
                }
                4 if rng.below(2) == 0 => {
                    // A control byte that drops a socket or ends a session.
                    data.splice(at..at, [SEPARATOR, 0x80 | rng.next() as u8]);
                }
                4 => {
                    // Splice in part of another seed.
                    let other = &seeds[rng.below(seeds.len())].1;
                    let from = rng.below(other.len() + 1);
                    let end = (from + rng.below(64)).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
                _ => {
                    // Repeat a line: bursts, resends, rate limits.
                    let line: Vec<u8> = data[at..]
                        .split(|b| *b == SEPARATOR)
                        .next()
                        .unwrap_or_default()
                        .to_vec();
                    for _ in 0..rng.below(24) {
                        data.push(SEPARATOR);
                        data.extend_from_slice(&line);
                    }
                }
            }
        }
        data
    }

    /// SPEC L7: a fixed stream of 10,000 random and mutated inputs.
    #[test]
    fn fuzzing_survives_ten_thousand_pseudo_random_inputs() {
        let seeds = seeds();
        let mut rng = Rng(0x5eed_c4a7_2024_0001);
        for i in 0..10_000 {
            let data = input(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| frames(&data));
            if outcome.is_err() {
                panic!("input {i} panicked: {:?}", String::from_utf8_lossy(&data));
            }
        }
    }

    #[test]
    fn fuzzing_reads_the_control_byte() {
        // `@` is tab 0 now, `W` is tab 3 after 10 s, 0x81 drops tab 1's socket.
        assert_eq!(b'@' & 0b11, 0);
        assert_eq!((b'@' >> 2) & 0b111, 0);
        assert_eq!(b'W' & 0b11, 3);
        assert_eq!(CLOCK_STEPS[usize::from((b'W' >> 2) & 0b111)], 10_000);
        assert_eq!(0x81u8 >> 6, 0b10);
        // A dropped tab is back only after a hello.
        let mut relay = Relay::new();
        relay.step(0x81, br#"{"type":"ping","nonce":1}"#);
        assert_eq!(relay.core.connection_count(), 3);
        relay.step(b'A', br#"{"type":"hello","protocol":3}"#);
        assert_eq!(relay.core.connection_count(), 4);
        relay.finish();
    }
}
