//! The domain rules, driven by hand: no sockets, no clock. Each test names
//! the SPEC ids it covers.

use super::*;

/// A relay core plus what each connection has received.
struct World {
    core: Core,
    now: Millis,
    inbox: HashMap<ConnId, Vec<ServerMsg>>,
    closed: HashMap<ConnId, u16>,
}

const T0: Millis = 1_700_000_000_000;

fn user(id: u64, name: &str) -> User {
    User {
        id: UserId(id),
        name: name.into(),
        color: "#3557d4".into(),
    }
}

fn alice() -> User {
    user(1, "alice")
}
fn bob() -> User {
    user(2, "Bob")
}
fn carol() -> User {
    user(3, "carol")
}

impl World {
    fn new() -> Self {
        Self::with(Limits::default())
    }

    fn with(limits: Limits) -> Self {
        World {
            core: Core::new(limits),
            now: T0,
            inbox: HashMap::new(),
            closed: HashMap::new(),
        }
    }

    fn pump(&mut self) {
        for out in self.core.take_outbound() {
            match out {
                Outbound::Send { to, msg } => {
                    for conn in to {
                        self.inbox.entry(conn).or_default().push(msg.clone());
                    }
                }
                Outbound::Welcome { conn, welcome } => {
                    self.inbox.entry(conn).or_default().push(welcome.to_msg());
                }
                Outbound::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
            }
        }
    }

    /// Connects `conn` for `user` (session numbered like the user) and
    /// returns its welcome.
    fn connect(&mut self, conn: u64, user: User) -> ServerMsg {
        self.connect_session(conn, user.id.0, user, &[])
    }

    fn connect_session(
        &mut self,
        conn: u64,
        session: u64,
        user: User,
        resume: &[Resume],
    ) -> ServerMsg {
        self.core
            .connect(ConnId(conn), SessionId(session), user, resume, self.now);
        self.pump();
        self.frames(conn).into_iter().next().expect("a welcome")
    }

    fn disconnect(&mut self, conn: u64) {
        self.core.disconnect(ConnId(conn), self.now);
        self.pump();
    }

    fn send(&mut self, conn: u64, msg: ClientMsg) {
        self.core.frame(ConnId(conn), msg, self.now);
        self.pump();
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.core.tick(self.now);
        self.pump();
    }

    /// Everything `conn` received since the last call.
    fn frames(&mut self, conn: u64) -> Vec<ServerMsg> {
        self.inbox.remove(&ConnId(conn)).unwrap_or_default()
    }

    /// `conn` opens a conversation with `with` and gets its id.
    fn open(&mut self, conn: u64, with: &[u64]) -> ConversationId {
        self.send(
            conn,
            ClientMsg::Open {
                with: with.iter().map(|u| UserId(*u)).collect(),
            },
        );
        let frames = self.inbox.get(&ConnId(conn)).cloned().unwrap_or_default();
        frames
            .iter()
            .find_map(|f| match f {
                ServerMsg::Opened { conversation } => Some(*conversation),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no `opened` for conn {conn}: {frames:?}"))
    }

    fn post(&mut self, conn: u64, conversation: ConversationId, client_id: u64, text: &str) {
        self.send(
            conn,
            ClientMsg::Send {
                conversation,
                client_id: ClientMsgId(client_id),
                text: text.into(),
            },
        );
    }
}

fn online_names(welcome: &ServerMsg) -> Vec<String> {
    match welcome {
        ServerMsg::Welcome { online, .. } => online.iter().map(|u| u.name.clone()).collect(),
        other => panic!("not a welcome: {other:?}"),
    }
}

fn welcome_conversations(welcome: &ServerMsg) -> Vec<ConversationSnapshot> {
    match welcome {
        ServerMsg::Welcome { conversations, .. } => conversations.clone(),
        other => panic!("not a welcome: {other:?}"),
    }
}

fn texts(frames: &[ServerMsg]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Message { message, .. } => Some((message.seq.0, message.text.clone())),
            _ => None,
        })
        .collect()
}

fn errors(frames: &[ServerMsg]) -> Vec<ErrorKind> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Error { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

/// Who joined and left, per presence frame (frames about activity only are skipped).
fn presence(frames: &[ServerMsg]) -> Vec<(Vec<String>, Vec<UserId>)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Presence { joined, left, .. } if !(joined.is_empty() && left.is_empty()) => {
                Some((
                    joined.iter().map(|u| u.name.clone()).collect(),
                    left.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// Activity changes heard, in order.
fn activity(frames: &[ServerMsg]) -> Vec<(UserId, Activity)> {
    frames
        .iter()
        .flat_map(|f| match f {
            ServerMsg::Presence { activity, .. } => {
                activity.iter().map(|a| (a.user, a.activity)).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn typing_frames(frames: &[ServerMsg]) -> Vec<(UserId, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Typing { user, active, .. } => Some((*user, *active)),
            _ => None,
        })
        .collect()
}

fn marks_frames(frames: &[ServerMsg]) -> Vec<(UserId, u64, u64)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Marks { marks, .. } => Some((marks.user, marks.delivered.0, marks.read.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn u1_welcome_lists_the_other_online_users_sorted_by_name_never_yourself() {
    let mut w = World::new();
    w.connect(10, carol());
    w.connect(20, alice());
    w.connect(30, bob());
    w.advance(100);
    let welcome = w.connect(31, bob());
    assert_eq!(online_names(&welcome), ["alice", "carol"]);
    assert!(matches!(welcome, ServerMsg::Welcome { me, .. } if me == bob()));
}

/// A welcome lists the online users as the last presence batch announced
/// them; the next batch brings the newcomer the changes since, as it
/// brings them to everyone, so the newcomer's list is never behind
/// anyone else's and never holds anyone twice.
#[test]
fn u1_u4_a_welcome_within_a_batch_window_is_completed_by_the_next_batch() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, carol());
    w.advance(100);
    // Carol's last tab closes; her grace ends just after a batch went
    // out, so the batch that says she left is still to come.
    w.disconnect(20);
    let grace = Limits::default().offline_grace.as_millis() as u64;
    w.advance(grace - 50);
    w.advance(50);
    w.frames(10);
    // Within that window bob comes, then dave.
    w.connect(30, bob());
    let welcome = w.connect(40, user(4, "dave"));
    assert_eq!(
        online_names(&welcome),
        ["alice", "carol"],
        "the roster as last announced: carol still in it, bob not yet"
    );
    w.advance(100);
    assert_eq!(
        presence(&w.frames(40)),
        [(vec!["Bob".to_string()], vec![UserId(3)])],
        "the batch completes the newcomer's list"
    );
    assert_eq!(
        presence(&w.frames(10)),
        [(vec!["Bob".to_string(), "dave".to_string()], vec![UserId(3)])]
    );
    let eve = user(5, "eve");
    assert_eq!(online_names(&w.connect(50, eve)), ["alice", "Bob", "dave"]);
}

#[test]
fn u4_presence_reaches_others_as_batched_diffs() {
    let mut w = World::new();
    w.connect(10, alice());
    w.advance(100);
    w.frames(10);

    // Two users join within one batch window: alice hears once, about both.
    w.connect(20, bob());
    w.connect(30, carol());
    assert_eq!(presence(&w.frames(10)), [], "nothing before the batch tick");
    w.advance(100);
    assert_eq!(
        presence(&w.frames(10)),
        [(vec!["Bob".to_string(), "carol".to_string()], vec![])]
    );
    // Each newcomer hears of the other, never of itself.
    assert_eq!(
        presence(&w.frames(20)),
        [(vec!["carol".to_string()], vec![])]
    );
    assert_eq!(presence(&w.frames(30)), [(vec!["Bob".to_string()], vec![])]);

    // At most one presence frame per client per batch window.
    w.disconnect(30);
    w.advance(10_000); // carol's grace ends: a `left` is pending
    w.connect(40, user(4, "dave"));
    w.advance(50); // inside the window after the last flush? No flush yet if due.
    let frames: Vec<_> = presence(&w.frames(10));
    assert!(frames.len() <= 1, "{frames:?}");
    w.advance(100);
    let all: Vec<_> = frames.into_iter().chain(presence(&w.frames(10))).collect();
    assert_eq!(
        all.iter().map(|(j, _)| j.len()).sum::<usize>(),
        1,
        "dave joined once: {all:?}"
    );
    assert_eq!(
        all.iter().map(|(_, l)| l.len()).sum::<usize>(),
        1,
        "carol left once: {all:?}"
    );
}

/// SPEC U4: the batch bounds how often presence frames go, not how late
/// a change is: one after a quiet spell may go at once; one within a
/// window of the last frame waits for the window's end, and no longer.
#[test]
fn u4_presence_is_due_at_once_after_a_quiet_window_and_at_its_end_within_one() {
    let mut w = World::new();
    assert_eq!(w.core.presence_due(), None, "nothing pending");
    w.connect(10, alice());
    w.advance(100);
    w.frames(10);
    assert_eq!(w.core.presence_due(), None, "the join went out");
    let flushed = w.now;

    w.advance(5_000);
    w.connect(20, bob());
    assert_eq!(
        w.core.presence_due(),
        Some(flushed + 100),
        "a quiet window has passed: due now"
    );
    w.advance(0);
    assert_eq!(presence(&w.frames(10)), [(vec!["Bob".to_string()], vec![])]);
    let flushed = w.now;

    w.advance(30);
    w.connect(30, carol());
    assert_eq!(w.core.presence_due(), Some(flushed + 100));
    w.advance(69);
    assert_eq!(presence(&w.frames(10)), [], "one frame per window at most");
    w.advance(1);
    assert_eq!(
        presence(&w.frames(10)),
        [(vec!["carol".to_string()], vec![])],
        "at the window's end"
    );
}

#[test]
fn u3_a_reload_within_the_grace_period_changes_nothing() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.advance(100);
    w.frames(10);

    w.disconnect(20);
    w.advance(5_000);
    w.connect(21, bob());
    w.advance(10_000);
    assert_eq!(presence(&w.frames(10)), [], "bob never left");
    assert_eq!(w.core.online_count(), 2);
}

/// Operators watch the relay's memory come back once a crowd has gone
/// (the soak in docs/RELIABILITY.md): no table stays sized for it.
#[test]
fn u3_c7_once_everyone_is_offline_the_tables_sized_for_the_crowd_are_freed() {
    let mut w = World::new();
    for u in 0..200 {
        w.connect(1_000 + u, user(100 + u, &format!("user{u}")));
    }
    for u in (0..200).step_by(2) {
        w.open(1_000 + u, &[101 + u]);
    }
    assert_eq!(w.core.conversation_count(), 100);
    for u in 0..200 {
        w.disconnect(1_000 + u);
    }
    w.advance(5_000);
    assert_eq!(
        w.core.users.len(),
        200,
        "users in their grace period are still tracked"
    );
    assert_eq!(w.core.conns.capacity(), 0, "the connections are all gone");
    w.advance(5_000);
    assert_eq!((w.core.online_count(), w.core.conversation_count()), (0, 0));
    let core = &w.core;
    assert_eq!(
        [
            core.conns.capacity(),
            core.users.capacity(),
            core.conversations.capacity(),
            core.by_participants.capacity(),
        ],
        [0; 4],
        "conns, users, conversations, by participants"
    );
    w.connect(1, alice());
    assert_eq!(w.core.online_count(), 1, "and the relay fills them again");
}

#[test]
fn u3_after_the_grace_period_the_user_is_offline_for_everyone() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(21, bob());
    w.advance(100);
    w.frames(10);

    w.disconnect(20);
    w.advance(20_000);
    assert_eq!(presence(&w.frames(10)), [], "bob still has a tab");
    w.disconnect(21);
    w.advance(9_900);
    assert_eq!(presence(&w.frames(10)), [], "still in the grace period");
    w.advance(100);
    assert_eq!(presence(&w.frames(10)), [(vec![], vec![UserId(2)])]);
    assert_eq!(online_names(&w.connect(11, alice())), Vec::<String>::new());
}

#[test]
fn c1_opening_is_idempotent_from_both_sides_and_double_clicks() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(21, bob());
    let a = w.open(10, &[2]);
    let again = w.open(10, &[2]);
    let from_bob = w.open(20, &[1, 2]);
    assert_eq!(a, again);
    assert_eq!(a, from_bob);
    assert_eq!(w.core.conversation_count(), 1);

    // C2: every tab of every participant heard of it exactly once.
    for conn in [10, 20, 21] {
        let started = w
            .frames(conn)
            .iter()
            .filter(|f| matches!(f, ServerMsg::Started { .. }))
            .count();
        assert_eq!(started, 1, "conn {conn}");
    }
}

#[test]
fn c1_only_online_users_and_sensible_sets() {
    let mut w = World::new();
    w.connect(10, alice());
    w.send(
        10,
        ClientMsg::Open {
            with: vec![UserId(9)],
        },
    );
    w.send(10, ClientMsg::Open { with: vec![] });
    w.send(
        10,
        ClientMsg::Open {
            with: vec![UserId(1)],
        },
    );
    assert_eq!(
        errors(&w.frames(10)),
        [
            ErrorKind::UserOffline,
            ErrorKind::BadParticipants,
            ErrorKind::BadParticipants
        ]
    );
}

#[test]
fn c2_c5_messages_reach_every_tab_of_every_participant_in_one_order() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(11, alice());
    w.connect(20, bob());
    w.connect(30, carol());
    let c = w.open(10, &[2]);
    for conn in [10, 11, 20, 30] {
        w.frames(conn);
    }
    w.advance(1_000);
    w.post(10, c, 1, "hi bob");
    w.post(20, c, 1, "hi alice");
    w.post(11, c, 2, "from my other tab");

    let expected = vec![
        (1, "hi bob".to_string()),
        (2, "hi alice".to_string()),
        (3, "from my other tab".to_string()),
    ];
    for conn in [10, 11, 20] {
        let frames = w.frames(conn);
        assert_eq!(texts(&frames), expected, "conn {conn}");
        // C5: stamped by the relay: author from the connection, relay time.
        let authors: Vec<UserId> = frames
            .iter()
            .filter_map(|f| match f {
                ServerMsg::Message { message, .. } => {
                    assert_eq!(message.time, T0 + 1_000);
                    Some(message.author)
                }
                _ => None,
            })
            .collect();
        assert_eq!(authors, [UserId(1), UserId(2), UserId(1)]);
    }
    assert_eq!(texts(&w.frames(30)), [], "carol is not in it");

    // C2: a tab opened later has the conversation with its history.
    let welcome = w.connect(22, bob());
    let conversations = welcome_conversations(&welcome);
    assert_eq!(conversations.len(), 1);
    let history: Vec<&str> = conversations[0]
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(history, ["hi bob", "hi alice", "from my other tab"]);
    assert_eq!(conversations[0].participants, [alice(), bob()]);
}

#[test]
fn c2_a_tab_that_opens_or_closes_between_messages_gets_exactly_the_messages_of_its_life() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    w.post(10, c, 1, "one");
    w.connect(21, bob());
    w.post(10, c, 2, "two");
    w.disconnect(20);
    w.post(10, c, 3, "three");
    w.connect(22, bob());
    w.post(21, c, 1, "four");

    let text = |frames: Vec<ServerMsg>| -> Vec<String> {
        texts(&frames).into_iter().map(|(_, t)| t).collect()
    };
    assert_eq!(text(w.frames(10)), ["one", "two", "three", "four"]);
    assert_eq!(text(w.frames(20)), ["one", "two"], "closed before three");
    assert_eq!(
        text(w.frames(21)),
        ["two", "three", "four"],
        "opened after one"
    );
    assert_eq!(text(w.frames(22)), ["four"], "opened after three");
}

#[test]
fn c6_a_resend_with_the_same_client_id_is_delivered_once() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    w.frames(10);
    w.frames(20);
    w.post(10, c, 7, "once");
    w.post(10, c, 7, "once");
    assert_eq!(texts(&w.frames(20)), [(1, "once".to_string())]);
    // The sender hears it twice: the broadcast and the confirmation of the resend.
    assert_eq!(
        texts(&w.frames(10)),
        [(1, "once".to_string()), (1, "once".to_string())]
    );
    // The same id from another author is another message.
    w.post(20, c, 7, "mine");
    assert_eq!(texts(&w.frames(10)), [(2, "mine".to_string())]);
}

#[test]
fn c4_blank_and_overlong_messages_are_refused_with_their_client_id() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    w.frames(10);
    w.post(10, c, 1, " \n\t");
    w.post(10, c, 2, &"x".repeat(MAX_MESSAGE_CHARS + 1));
    w.post(10, c, 3, &"é".repeat(MAX_MESSAGE_CHARS));
    let frames = w.frames(10);
    assert_eq!(
        errors(&frames),
        [ErrorKind::EmptyMessage, ErrorKind::MessageTooLong]
    );
    let ids: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Error { client_id, .. } => *client_id,
            _ => None,
        })
        .collect();
    assert_eq!(ids, [ClientMsgId(1), ClientMsgId(2)]);
    assert_eq!(
        texts(&frames).len(),
        1,
        "4,000 characters is within the limit"
    );
}

#[test]
fn c7_a_dialog_ends_when_a_participant_goes_offline_and_is_freed_when_closed() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    w.post(10, c, 1, "still there?");
    w.frames(10);

    w.disconnect(20);
    w.advance(10_000);
    let ending = Ending {
        user: UserId(2),
        reason: Departure::WentOffline,
    };
    assert!(w.frames(10).contains(&ServerMsg::Ended {
        conversation: c,
        ending
    }));

    // It stays readable, ended, in alice's tabs, including new ones.
    let snapshot = &welcome_conversations(&w.connect(11, alice()))[0];
    assert_eq!(snapshot.ended, Some(ending));
    assert_eq!(snapshot.messages.len(), 1);
    assert_eq!(snapshot.participants, [alice(), bob()]);

    w.post(10, c, 2, "hello?");
    assert_eq!(errors(&w.frames(10)), [ErrorKind::ConversationEnded]);

    w.send(10, ClientMsg::Leave { conversation: c });
    assert!(w
        .frames(11)
        .contains(&ServerMsg::Closed { conversation: c }));
    assert_eq!(w.core.conversation_count(), 0, "the relay freed it");

    // bob returns: a new dialog, not the old one.
    w.connect(21, bob());
    assert_ne!(w.open(10, &[2]), c);
}

#[test]
fn c8_leaving_closes_it_in_all_your_tabs_and_ends_the_dialog_for_the_other() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(11, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    for conn in [10, 11, 20] {
        w.frames(conn);
    }
    w.send(11, ClientMsg::Leave { conversation: c });
    for conn in [10, 11] {
        assert_eq!(w.frames(conn), [ServerMsg::Closed { conversation: c }]);
    }
    assert_eq!(
        w.frames(20),
        [ServerMsg::Ended {
            conversation: c,
            ending: Ending {
                user: UserId(1),
                reason: Departure::Left
            }
        }]
    );
    w.advance(100);
    assert_eq!(
        online_names(&w.connect(12, alice())),
        ["Bob"],
        "leaving is not going offline"
    );
    assert!(welcome_conversations(&w.connect(13, alice())).is_empty());
}

#[test]
fn c10_a_group_goes_on_while_two_remain() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(30, carol());
    let g = w.open(10, &[2, 3]);
    w.post(30, g, 1, "hi all");
    for conn in [10, 20, 30] {
        assert_eq!(
            texts(&w.frames(conn)),
            [(1, "hi all".to_string())],
            "conn {conn}"
        );
    }

    w.send(30, ClientMsg::Leave { conversation: g });
    let departed = ServerMsg::Departed {
        conversation: g,
        user: UserId(3),
        reason: Departure::Left,
    };
    assert_eq!(w.frames(10), std::slice::from_ref(&departed));
    assert_eq!(w.frames(20), [departed]);
    assert_eq!(w.frames(30), [ServerMsg::Closed { conversation: g }]);
    w.post(20, g, 2, "just us");
    assert_eq!(texts(&w.frames(10)), [(2, "just us".to_string())]);
    assert_eq!(w.frames(30), [], "carol left: she hears nothing more");

    w.disconnect(20);
    w.advance(10_000);
    assert!(w.frames(10).contains(&ServerMsg::Ended {
        conversation: g,
        ending: Ending {
            user: UserId(2),
            reason: Departure::WentOffline
        }
    }));
}

#[test]
fn c10_a_shrunken_group_does_not_hijack_an_existing_dialog() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(30, carol());
    let dialog = w.open(10, &[2]);
    let group = w.open(10, &[2, 3]);
    w.frames(10);
    w.send(
        30,
        ClientMsg::Leave {
            conversation: group,
        },
    );
    assert_eq!(w.open(10, &[2]), dialog);
    w.frames(10);
    w.send(
        10,
        ClientMsg::Leave {
            conversation: dialog,
        },
    );
    // The dialog is gone; the shrunken group is now the conversation of that set.
    w.frames(10);
    let next = w.open(20, &[1]);
    assert_ne!(next, dialog);
}

#[test]
fn r2_resume_sends_exactly_the_missed_messages_and_flags_gaps() {
    let limits = Limits {
        history: 5,
        ..Limits::default()
    };
    let mut w = World::with(limits);
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    for i in 1..=4 {
        w.post(10, c, i, &format!("m{i}"));
    }
    w.disconnect(20);
    for i in 5..=6 {
        w.post(10, c, i, &format!("m{i}"));
    }
    let resume = [Resume {
        conversation: c,
        last_seq: Seq(4),
    }];
    let snapshot = &welcome_conversations(&w.connect_session(21, 2, bob(), &resume))[0];
    let seqs: Vec<u64> = snapshot.messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, [5, 6]);
    assert!(!snapshot.gap);

    // History holds 2..=6 now; a client that last saw 0 has a gap.
    let resume = [Resume {
        conversation: c,
        last_seq: Seq(0),
    }];
    let snapshot = &welcome_conversations(&w.connect_session(22, 2, bob(), &resume))[0];
    assert_eq!(snapshot.messages.first().map(|m| m.seq), Some(Seq(2)));
    assert!(snapshot.gap, "message 1 is gone and the page must say so");

    // A client claiming to be past the end gets nothing, and no overflow.
    let resume = [Resume {
        conversation: c,
        last_seq: Seq(u64::MAX),
    }];
    let snapshot = &welcome_conversations(&w.connect_session(23, 2, bob(), &resume))[0];
    assert!(snapshot.messages.is_empty());
    assert!(!snapshot.gap);
}

#[test]
fn l2_non_participants_can_neither_post_nor_close_nor_learn_it_exists() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(30, carol());
    let c = w.open(10, &[2]);
    w.frames(10);
    w.frames(30);
    w.post(30, c, 1, "let me in");
    w.send(30, ClientMsg::Leave { conversation: c });
    let unknown = ConversationId(c.0 + 1000);
    w.post(30, unknown, 2, "guess");
    w.send(
        30,
        ClientMsg::Leave {
            conversation: unknown,
        },
    );
    let frames = w.frames(30);
    // The same answer for a conversation that exists and one that does not.
    let answers: Vec<_> = frames
        .iter()
        .map(|f| match f {
            ServerMsg::Error { kind, message, .. } => (*kind, message.clone()),
            other => panic!("carol learned something: {other:?}"),
        })
        .collect();
    assert_eq!(answers[0], answers[2]);
    assert_eq!(answers[1], answers[3]);
    assert_eq!(answers[0].0, ErrorKind::NoSuchConversation);
    assert!(welcome_conversations(&w.connect(31, carol())).is_empty());
    assert_eq!(w.frames(10), [], "nothing reached the participants");
}

#[test]
fn l4_messages_over_the_rate_limit_are_refused_not_delivered() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    let c = w.open(10, &[2]);
    w.frames(10);
    for i in 0..25 {
        w.post(10, c, i, "spam");
    }
    let frames = w.frames(10);
    assert_eq!(texts(&frames).len(), 20, "the burst");
    assert_eq!(errors(&frames), vec![ErrorKind::SlowDown; 5]);
    assert!(frames.iter().any(|f| matches!(
        f,
        ServerMsg::Error {
            kind: ErrorKind::SlowDown,
            client_id: Some(ClientMsgId(24)),
            ..
        }
    )));
    assert_eq!(texts(&w.frames(20)).len(), 20);

    // Ten a second after that.
    w.advance(1_000);
    for i in 100..112 {
        w.post(10, c, i, "steady");
    }
    let frames = w.frames(10);
    assert_eq!(texts(&frames).len(), 10);
    assert_eq!(errors(&frames).len(), 2);
}

#[test]
fn l5_connection_conversation_participant_and_history_caps() {
    let limits = Limits {
        connections_per_user: 3,
        conversations_per_user: 2,
        participants: 3,
        history: 4,
        ..Limits::default()
    };
    let mut w = World::with(limits);
    for conn in 10..13 {
        w.connect(conn, alice());
    }
    let refused = w.connect(13, alice());
    assert_eq!(errors(&[refused]), [ErrorKind::TooManyConnections]);
    assert_eq!(
        w.closed.get(&ConnId(13)),
        Some(&close_code::POLICY_VIOLATION)
    );
    assert_eq!(w.core.connection_count(), 3);

    for (conn, u) in [(20, bob()), (30, carol()), (40, user(4, "dave"))] {
        w.connect(conn, u);
    }
    w.send(
        10,
        ClientMsg::Open {
            with: vec![UserId(2), UserId(3), UserId(4)],
        },
    );
    assert_eq!(errors(&w.frames(10)), [ErrorKind::BadParticipants]);

    let c = w.open(10, &[2]);
    w.open(10, &[3]);
    w.frames(10);
    w.send(
        10,
        ClientMsg::Open {
            with: vec![UserId(4)],
        },
    );
    assert_eq!(errors(&w.frames(10)), [ErrorKind::TooManyConversations]);
    w.send(
        40,
        ClientMsg::Open {
            with: vec![UserId(1)],
        },
    );
    match &w.frames(40)[..] {
        [ServerMsg::Error {
            kind: ErrorKind::TooManyConversations,
            message,
            ..
        }] => {
            assert!(message.contains("alice"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    for i in 0..6 {
        w.post(10, c, i, &format!("m{i}"));
    }
    let history = &welcome_conversations(&w.connect(21, bob()))[0].messages;
    let kept: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(kept, ["m2", "m3", "m4", "m5"]);
}

#[test]
fn s5_ending_a_session_closes_its_tabs_only() {
    let mut w = World::new();
    w.connect_session(10, 100, alice(), &[]);
    w.connect_session(11, 100, alice(), &[]);
    w.connect_session(12, 101, alice(), &[]);
    w.connect(20, bob());
    w.advance(100);
    w.frames(20);

    w.core.end_session(SessionId(100), w.now);
    w.pump();
    assert_eq!(w.closed.get(&ConnId(10)), Some(&close_code::SIGNED_OUT));
    assert_eq!(w.closed.get(&ConnId(11)), Some(&close_code::SIGNED_OUT));
    assert_eq!(w.closed.get(&ConnId(12)), None);
    w.advance(60_000);
    assert_eq!(
        presence(&w.frames(20)),
        [],
        "alice is still online in another browser"
    );

    w.core.end_session(SessionId(101), w.now);
    w.advance(10_000);
    assert_eq!(presence(&w.frames(20)), [(vec![], vec![UserId(1)])]);
}

#[test]
fn frames_from_unknown_connections_and_second_hellos_are_harmless() {
    let mut w = World::new();
    w.send(99, ClientMsg::Ping { nonce: 1 });
    w.disconnect(99);
    assert!(w.inbox.is_empty());
    w.connect(10, alice());
    w.send(
        10,
        ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            resume: vec![],
        },
    );
    w.send(10, ClientMsg::Ping { nonce: 5 });
    assert_eq!(
        w.frames(10)[1..],
        [ServerMsg::Pong { nonce: 5 }],
        "after the hello error the connection works"
    );
}

#[test]
fn b1_typing_is_announced_once_and_cleared_by_sending_by_silence_and_by_leaving() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(21, bob());
    let c = w.open(10, &[2]);
    for conn in [10, 20, 21] {
        w.frames(conn);
    }
    w.send(10, ClientMsg::Typing { conversation: c });
    w.advance(500);
    w.send(10, ClientMsg::Typing { conversation: c }); // within the rate limit: ignored
    w.advance(1_500);
    w.send(10, ClientMsg::Typing { conversation: c }); // extends, not re-announced
    for conn in [20, 21] {
        assert_eq!(
            typing_frames(&w.frames(conn)),
            [(UserId(1), true)],
            "conn {conn}"
        );
    }
    assert_eq!(
        typing_frames(&w.frames(10)),
        [],
        "never told about yourself"
    );

    // Sending clears it at once.
    w.post(10, c, 1, "done typing");
    assert_eq!(typing_frames(&w.frames(20)), [(UserId(1), false)]);

    // Silence clears it after 5 s: it cannot get stuck.
    w.send(10, ClientMsg::Typing { conversation: c });
    w.advance(4_900);
    assert_eq!(typing_frames(&w.frames(20)), [(UserId(1), true)]);
    w.advance(200);
    assert_eq!(typing_frames(&w.frames(20)), [(UserId(1), false)]);

    // Going offline clears it too.
    w.send(20, ClientMsg::Typing { conversation: c });
    w.disconnect(20);
    w.disconnect(21);
    w.advance(10_000);
    let frames = w.frames(10);
    assert_eq!(
        typing_frames(&frames),
        [(UserId(2), true), (UserId(2), false)]
    );
}

#[test]
fn b1_b2_typing_and_marks_are_for_participants_only() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(30, carol());
    let c = w.open(10, &[2]);
    w.frames(30);
    w.send(30, ClientMsg::Typing { conversation: c });
    w.send(
        30,
        ClientMsg::Marks {
            conversation: c,
            delivered: Seq(1),
            read: Seq(1),
        },
    );
    assert_eq!(
        errors(&w.frames(30)),
        [ErrorKind::NoSuchConversation, ErrorKind::NoSuchConversation]
    );
    assert_eq!(typing_frames(&w.frames(10)), []);
}

#[test]
fn b2_b3_marks_move_forward_only_and_reach_every_holder() {
    let mut w = World::new();
    w.connect(10, alice());
    w.connect(20, bob());
    w.connect(21, bob());
    let c = w.open(10, &[2]);
    for i in 1..=3 {
        w.post(10, c, i, "m");
    }
    for conn in [10, 20, 21] {
        w.frames(conn);
    }
    // Bob's first tab has them all (delivered), and shows two (read).
    w.send(
        20,
        ClientMsg::Marks {
            conversation: c,
            delivered: Seq(3),
            read: Seq(2),
        },
    );
    for conn in [10, 20, 21] {
        assert_eq!(
            marks_frames(&w.frames(conn)),
            [(UserId(2), 3, 2)],
            "conn {conn}"
        );
    }
    // Stale or unchanged marks from another tab change nothing.
    w.send(
        21,
        ClientMsg::Marks {
            conversation: c,
            delivered: Seq(1),
            read: Seq(1),
        },
    );
    assert_eq!(marks_frames(&w.frames(10)), []);
    // Marks past the last message are clamped; read implies delivered.
    w.send(
        21,
        ClientMsg::Marks {
            conversation: c,
            delivered: Seq(0),
            read: Seq(99),
        },
    );
    assert_eq!(marks_frames(&w.frames(10)), [(UserId(2), 3, 3)]);
    // A new tab learns the marks with the conversation.
    let snapshot = &welcome_conversations(&w.connect(11, alice()))[0];
    assert_eq!(
        snapshot.marks,
        [Marks {
            user: UserId(2),
            delivered: Seq(3),
            read: Seq(3)
        }]
    );
}

/// Away is the default: a newcomer who is away joins without an activity
/// entry, and a welcome names only those who are not away.
#[test]
fn b4_u4_away_needs_no_entry_in_a_join_or_a_welcome() {
    let mut w = World::new();
    w.connect(10, alice());
    w.advance(100);
    w.frames(10);
    w.connect(20, bob());
    w.advance(100);
    let frames = w.frames(10);
    assert_eq!(presence(&frames), [(vec!["Bob".to_string()], vec![])]);
    assert_eq!(activity(&frames), [], "bob joined away: nothing to say");
    w.send(10, ClientMsg::Activity { active: true });
    w.advance(100);
    let welcome = w.connect(30, carol());
    assert_eq!(online_names(&welcome), ["alice", "Bob"]);
    match welcome {
        ServerMsg::Welcome { activity, .. } => assert_eq!(
            activity,
            [UserActivity {
                user: UserId(1),
                activity: Activity::Active
            }],
            "alice is active; bob, away, is not named"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn b4_activity_follows_the_tabs_and_is_batched_with_presence() {
    let mut w = World::new();
    w.connect(10, alice());
    w.advance(100);
    w.frames(10);
    w.connect(20, bob());
    w.connect(21, bob());
    w.send(21, ClientMsg::Activity { active: true });
    w.advance(100);
    // One frame: bob joined, active (his first state is not announced apart).
    let frames = w.frames(10);
    assert_eq!(presence(&frames), [(vec!["Bob".to_string()], vec![])]);
    assert_eq!(activity(&frames), [(UserId(2), Activity::Active)]);

    w.send(21, ClientMsg::Activity { active: false });
    w.advance(100);
    assert_eq!(activity(&w.frames(10)), [(UserId(2), Activity::Away)]);

    w.disconnect(20);
    w.disconnect(21);
    w.advance(100);
    assert_eq!(
        activity(&w.frames(10)),
        [(UserId(2), Activity::Reconnecting)]
    );

    // The welcome of a new tab carries everyone's activity.
    let welcome = w.connect(11, alice());
    match welcome {
        ServerMsg::Welcome { activity, .. } => assert_eq!(
            activity,
            [UserActivity {
                user: UserId(2),
                activity: Activity::Reconnecting
            }]
        ),
        other => panic!("{other:?}"),
    }
    // Quick flips within a batch window give one frame with the final state.
    w.connect(22, bob());
    w.send(22, ClientMsg::Activity { active: true });
    w.send(22, ClientMsg::Activity { active: false });
    w.send(22, ClientMsg::Activity { active: true });
    w.advance(100);
    assert_eq!(activity(&w.frames(10)), [(UserId(2), Activity::Active)]);
}

/// SPEC O4: a core restored from its serialized state (a cluster snapshot)
/// behaves exactly as the original from then on: same frames for the same
/// events, including sequence numbers, rate limits, typing and grace.
#[test]
fn o4_a_restored_core_behaves_like_the_original() {
    let limits = Limits {
        message_burst: 3.0,
        ..Limits::default()
    };
    let mut world = World::with(limits.clone());
    world.connect(1, alice());
    world.connect(2, bob());
    world.connect(3, carol());
    let dialog = world.open(1, &[2]);
    let group = world.open(1, &[2, 3]);
    world.post(1, dialog, 1, "one");
    world.post(2, dialog, 1, "two");
    world.post(1, group, 2, "three");
    world.send(
        2,
        ClientMsg::Typing {
            conversation: dialog,
        },
    );
    world.disconnect(3);
    world.advance(50);

    let json = serde_json::to_string(&world.core).unwrap();
    let mut restored: Core = serde_json::from_str(&json).unwrap();
    restored.set_limits(limits);
    let mut twin = World {
        core: restored,
        now: world.now,
        inbox: HashMap::new(),
        closed: HashMap::new(),
    };
    assert_eq!(
        serde_json::to_string(&twin.core).unwrap().len(),
        json.len(),
        "the state survives whole"
    );
    world.inbox.clear();

    for w in [&mut world, &mut twin] {
        // Alice's burst is nearly spent (3): the third message is refused.
        w.post(1, dialog, 3, "four");
        w.post(1, dialog, 4, "five");
        w.connect(4, bob());
        w.open(2, &[1]);
        w.advance(Limits::default().offline_grace.as_millis() as u64 + 100);
    }
    for conn in [1, 2, 4] {
        assert_eq!(world.frames(conn), twin.frames(conn), "conn {conn}");
    }
}

/// SPEC C6, L5: a resend is recognised by (author, client id) while its
/// message is kept, without a scan; once history drops it, it is not; a
/// cluster snapshot's copy of the history recognises the same resends.
#[test]
fn c6_l5_the_history_knows_each_kept_message_by_its_client_id() {
    let message = |seq: u64, author: u64, client: u64| ChatMessage {
        seq: Seq(seq),
        author: UserId(author),
        time: T0,
        text: format!("m{seq}"),
        client_id: ClientMsgId(client),
    };
    let mut history = History::default();
    for seq in 1..=5 {
        // Alice and bob each number their own messages 1, 2, 3…
        let (author, client) = if seq % 2 == 1 { (1, seq) } else { (2, seq) };
        history.push(message(seq, author, client), 3);
    }
    let found = |h: &History, author: u64, client: u64| {
        h.sent_as(UserId(author), ClientMsgId(client))
            .map(|m| m.seq.0)
    };
    assert_eq!(found(&history, 1, 5), Some(5));
    assert_eq!(found(&history, 2, 4), Some(4));
    assert_eq!(found(&history, 1, 3), Some(3));
    assert_eq!(found(&history, 2, 2), None, "dropped with the oldest");
    assert_eq!(found(&history, 1, 1), None);
    assert_eq!(found(&history, 2, 5), None, "another author's id");
    let copy: History = serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
    assert_eq!(found(&copy, 1, 5), Some(5));
    assert_eq!(found(&copy, 2, 2), None);
    assert_eq!(copy.iter().map(|m| m.seq.0).collect::<Vec<_>>(), [3, 4, 5]);
}
