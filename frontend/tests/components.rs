//! Component tests, run in headless Chromium by wasm-bindgen-test
//! (`cargo xtask test`, or `cargo test --target wasm32-unknown-unknown -p frontend`).
//! Each renders one component into the page and asserts on the DOM, as a
//! screen reader or a person would find it. Each names the SPEC ids it covers.
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use frontend::components::conversation::local_date_time;
use frontend::components::{
    connection_status, local_time, ConversationProps, ConversationView, OnlineUsers, SignIn,
    SignInProps,
};
use frontend::connection::{backoff, ws_url, ConnState, MAX_BACKOFF};
use shared::model::{Conversation, Ended, Entry, Pending};
use shared::protocol::{
    Activity, ChatMessage, ClientMsgId, ConversationId, Departure, Ending, Marks, Seq, User, UserId,
};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::{Element, HtmlElement, HtmlTextAreaElement};
use yew::prelude::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh element in the document to mount a component into.
fn mount_point() -> Element {
    let document = web_sys::window().unwrap().document().unwrap();
    let root = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&root).unwrap();
    root
}

fn find(root: &Element, css: &str) -> Option<Element> {
    root.query_selector(css).unwrap()
}

fn texts(root: &Element, css: &str) -> Vec<String> {
    let list = root.query_selector_all(css).unwrap();
    (0..list.length())
        .filter_map(|i| list.item(i))
        .map(|n| n.text_content().unwrap_or_default().trim().to_string())
        .collect()
}

async fn settle() {
    yew::scheduler::flush().await;
}

fn user(id: u64, name: &str, color: &str) -> User {
    User {
        id: UserId(id),
        name: name.into(),
        color: color.into(),
    }
}

// ------------------------------------------------------------ connection

#[derive(Properties, PartialEq)]
struct Probe {
    state: ConnState,
}

#[component(StatusProbe)]
fn status_probe(props: &Probe) -> Html {
    connection_status(props.state)
}

/// SPEC R1: the state is announced in a `role="status"` element, and while
/// the link is down it says "Reconnecting".
#[wasm_bindgen_test]
async fn r1_connection_status_is_announced_in_a_status_region() {
    for (state, text) in [
        (ConnState::Connecting, "Connecting…"),
        (ConnState::Connected, "Connected"),
        (ConnState::Reconnecting, "Reconnecting…"),
    ] {
        let root = mount_point();
        yew::Renderer::<StatusProbe>::with_root_and_props(root.clone(), Probe { state }).render();
        settle().await;
        let status = find(&root, "[role=status]").expect("no role=status element");
        assert_eq!(status.text_content().unwrap().trim(), text);
        assert_eq!(
            status.get_attribute("data-state").unwrap(),
            state.css_class()
        );
    }
}

/// SPEC R1: reconnect delays grow exponentially, are jittered, and never
/// exceed 10 s.
#[wasm_bindgen_test]
fn r1_reconnect_backoff_grows_with_jitter_and_is_capped() {
    assert!(backoff(0, 0.0) < backoff(3, 0.0));
    assert!(
        backoff(2, 0.0) < backoff(2, 0.99),
        "jitter changes the delay"
    );
    for attempt in [0, 1, 5, 10, 30, u32::MAX] {
        for jitter in [0.0, 0.5, 0.999, 7.0, -1.0] {
            assert!(backoff(attempt, jitter) <= MAX_BACKOFF);
            assert!(backoff(attempt, jitter) >= Duration::from_millis(125));
        }
    }
    assert!(
        backoff(30, 0.0) >= MAX_BACKOFF / 2,
        "late attempts wait long"
    );
}

/// SPEC C9, B5: a message's time is `HH:MM`, a transcript's
/// `YYYY-MM-DD HH:MM`, zero-padded, in the reader's time zone.
#[wasm_bindgen_test]
fn c9_b5_times_are_zero_padded_in_the_readers_time_zone() {
    for ms in [0, 1_000_000_000_000, 1_704_070_800_000, 1_767_225_599_000] {
        let date = js_sys::Date::new(&(ms as f64).into());
        let time = format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
        assert_eq!(local_time(ms), time);
        let day = format!(
            "{:04}-{:02}-{:02}",
            date.get_full_year(),
            date.get_month() + 1,
            date.get_date()
        );
        assert_eq!(local_date_time(ms), format!("{day} {time}"));
    }
}

#[wasm_bindgen_test]
fn relay_url_follows_the_page_scheme() {
    assert_eq!(ws_url("http:", "localhost:8080"), "ws://localhost:8080/ws");
    assert_eq!(ws_url("https:", "chat.example"), "wss://chat.example/ws");
}

// --------------------------------------------------------------- sign-in

/// SPEC S1, S2: the form has fields labelled Name and Password and a Log in
/// button; submitting it empty is refused in an alert, without a request.
#[wasm_bindgen_test]
async fn s1_sign_in_form_is_labelled_and_refuses_empty_fields_in_an_alert() {
    let root = mount_point();
    let props = SignInProps {
        on_signed_in: Callback::noop(),
        note: None,
    };
    yew::Renderer::<SignIn>::with_root_and_props(root.clone(), props).render();
    settle().await;

    for (label, id) in [("Name", "sign-in-name"), ("Password", "sign-in-password")] {
        let label_el = find(&root, &format!("label[for={id}]")).expect("label");
        assert_eq!(label_el.text_content().unwrap(), label);
        assert!(find(&root, &format!("input#{id}")).is_some());
    }
    assert_eq!(
        find(&root, "#sign-in-password")
            .unwrap()
            .get_attribute("type")
            .as_deref(),
        Some("password")
    );
    assert!(
        find(&root, "[role=alert]").is_none(),
        "no error before trying"
    );
    let button = find(&root, "button[type=submit]").unwrap();
    assert_eq!(button.text_content().unwrap(), "Log in");
    button.unchecked_into::<HtmlElement>().click();
    settle().await;
    let alert = find(&root, "[role=alert]").expect("an alert after an empty submit");
    assert!(
        alert.text_content().unwrap().contains("name"),
        "{:?}",
        alert.text_content()
    );
}

// ----------------------------------------------------------- online users

#[derive(Properties, PartialEq)]
struct UsersProbe {
    users: Vec<User>,
}

#[component(UsersHost)]
fn users_host(props: &UsersProbe) -> Html {
    let activity: std::collections::HashMap<UserId, Activity> =
        [(UserId(2), Activity::Away), (UserId(3), Activity::Active)]
            .into_iter()
            .collect();
    html! { <OnlineUsers users={props.users.clone()} on_open={Callback::noop()} enabled=true {activity} /> }
}

/// SPEC U1, C10: a list named "Online users", each entry a button named by
/// the user's name with their colour; ticking two offers a group.
#[wasm_bindgen_test]
async fn u1_online_users_are_buttons_in_a_named_list_and_two_picks_offer_a_group() {
    let root = mount_point();
    let users = vec![user(2, "bob", "#0f766e"), user(3, "Carol", "#a21caf")];
    yew::Renderer::<UsersHost>::with_root_and_props(root.clone(), UsersProbe { users }).render();
    settle().await;
    assert!(find(&root, "ul[aria-label='Online users']").is_some());
    assert_eq!(
        texts(&root, "ul[aria-label='Online users'] button.user"),
        ["bob", "Carol"]
    );
    let swatch = find(&root, "button.user .swatch").unwrap();
    assert!(swatch.get_attribute("style").unwrap().contains("#0f766e"));
    assert!(find(&root, ".start-group").is_none());
    // SPEC B4: the presence state next to each name, outside its button.
    assert_eq!(texts(&root, ".user-list .activity"), ["away", "active"]);

    let picks = root.query_selector_all("input.pick").unwrap();
    for i in 0..picks.length() {
        picks
            .item(i)
            .unwrap()
            .unchecked_into::<HtmlElement>()
            .click();
        settle().await;
    }
    assert_eq!(texts(&root, ".start-group"), ["Start group with 2"]);
}

// ---------------------------------------------------------- conversations

fn message(seq: u64, author: u64, text: &str) -> Entry {
    Entry::Message(std::sync::Arc::new(ChatMessage {
        seq: Seq(seq),
        author: UserId(author),
        time: 1_700_000_000_000,
        text: text.into(),
        client_id: ClientMsgId(seq),
    }))
}

fn dialog(entries: Vec<Entry>) -> Conversation {
    Conversation {
        id: ConversationId(7),
        members: vec![user(1, "alice", "#0f766e"), user(2, "bob", "#a21caf")],
        participants: vec![UserId(1), UserId(2)],
        last_seq: Seq(entries.len() as u64),
        entries,
        pending: vec![],
        ended: None,
        typing: vec![],
        marks: vec![],
    }
}

fn props(conversation: Conversation) -> ConversationProps {
    ConversationProps {
        conversation,
        me: UserId(1),
        focus_request: None,
        connected: true,
        on_send: Callback::from(|_: String| Ok(())),
        on_close: Callback::noop(),
        on_retry: Callback::noop(),
        on_discard: Callback::noop(),
        on_typing: Callback::noop(),
        on_export: Callback::noop(),
    }
}

#[derive(Properties, PartialEq)]
struct ConversationHostProps {
    inner: ConversationProps,
}

#[component(ConversationHost)]
fn conversation_host(props: &ConversationHostProps) -> Html {
    let p = props.inner.clone();
    html! {
        <ConversationView conversation={p.conversation} me={p.me} focus_request={p.focus_request}
            connected={p.connected} on_send={p.on_send} on_close={p.on_close}
            on_retry={p.on_retry} on_discard={p.on_discard} on_typing={p.on_typing}
            on_export={p.on_export} />
    }
}

async fn render_conversation(p: ConversationProps) -> (Element, yew::AppHandle<ConversationHost>) {
    let root = mount_point();
    let handle = yew::Renderer::<ConversationHost>::with_root_and_props(
        root.clone(),
        ConversationHostProps { inner: p },
    )
    .render();
    settle().await;
    (root, handle)
}

/// SPEC C3, C9: a region named "Conversation with NAMES", the participants,
/// the messages in a `role="log"` with author (in colour) and time, a
/// "Message" box and a "Close conversation" button; appending a message
/// shows it at the end.
#[wasm_bindgen_test]
async fn c3_a_conversation_is_a_named_region_with_a_log_and_a_message_box() {
    let (root, mut handle) =
        render_conversation(props(dialog(vec![message(1, 2, "hi alice")]))).await;
    let region = find(&root, "section[role=region]").unwrap();
    assert_eq!(
        region.get_attribute("aria-label").as_deref(),
        Some("Conversation with bob")
    );
    assert!(texts(&root, ".participants li").contains(&"bob".to_string()));
    assert_eq!(texts(&root, "[role=log] .message .text"), ["hi alice"]);
    assert_eq!(texts(&root, "[role=log] .message .author"), ["bob"]);
    assert!(find(&root, ".author")
        .unwrap()
        .get_attribute("style")
        .unwrap()
        .contains("#a21caf"));
    assert_eq!(texts(&root, "[role=log] time").len(), 1);
    let label = find(&root, "label").unwrap();
    assert_eq!(label.text_content().unwrap(), "Message");
    let textarea_id = find(&root, "textarea").unwrap().id();
    assert_eq!(label.get_attribute("for"), Some(textarea_id));
    assert_eq!(texts(&root, "button.close"), ["Close conversation"]);

    let mut more = dialog(vec![
        message(1, 2, "hi alice"),
        message(2, 1, "hi bob\nsecond line"),
    ]);
    more.pending.push(Pending {
        client_id: ClientMsgId(99),
        text: "on its way".into(),
        failed: None,
    });
    handle.update(ConversationHostProps { inner: props(more) });
    settle().await;
    assert_eq!(
        texts(&root, "[role=log] .message:not(.pending) .text"),
        ["hi alice", "hi bob\nsecond line"]
    );
    assert_eq!(
        texts(&root, "[role=log] .message.pending .state"),
        ["Sending…"]
    );
}

/// SPEC C9: markup and script in a message stay text: nothing is created
/// from them and nothing runs.
#[wasm_bindgen_test]
async fn c9_markup_in_a_message_stays_text() {
    let payloads = [
        "<img src=x onerror=\"window.__xss=1\">",
        "<script>window.__xss=1</script>",
        "<b>bold</b><a href=\"javascript:window.__xss=1\">x</a>",
        "\"><svg onload=window.__xss=1>",
    ];
    let entries = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| message(i as u64 + 1, 2, p))
        .collect();
    let (root, _handle) = render_conversation(props(dialog(entries))).await;
    assert_eq!(texts(&root, "[role=log] .message .text"), payloads);
    for tag in ["img", "script", "b", "a", "svg"] {
        assert!(
            find(&root, &format!("[role=log] {tag}")).is_none(),
            "a <{tag}> was made"
        );
    }
    let window = web_sys::window().unwrap();
    let xss = js_sys::Reflect::get(&window, &"__xss".into()).unwrap();
    assert!(xss.is_undefined(), "a payload ran");
}

/// SPEC C7: an ended conversation keeps its messages, says why, and its
/// prompt is disabled.
#[wasm_bindgen_test]
async fn c7_an_ended_conversation_stays_readable_with_its_prompt_disabled() {
    let mut ended = dialog(vec![message(1, 2, "bye")]);
    ended.participants = vec![UserId(1)];
    ended.ended = Some(Ended::By(Ending {
        user: UserId(2),
        reason: Departure::WentOffline,
    }));
    let (root, _handle) = render_conversation(props(ended)).await;
    assert_eq!(texts(&root, "[role=log] .message .text"), ["bye"]);
    assert_eq!(texts(&root, ".ended-note"), ["bob went offline"]);
    let area: HtmlTextAreaElement = find(&root, "textarea").unwrap().unchecked_into();
    assert!(area.disabled());
    assert_eq!(
        find(&root, "section[role=region]")
            .unwrap()
            .get_attribute("aria-label")
            .as_deref(),
        Some("Conversation with bob")
    );
}

/// SPEC C4: Enter sends and clears the box; a refused message keeps its
/// text with the note shown.
#[wasm_bindgen_test]
async fn c4_enter_sends_and_a_refusal_keeps_the_text() {
    let sent = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let log = sent.clone();
    let mut p = props(dialog(vec![]));
    p.on_send = Callback::from(move |text: String| {
        if text.chars().count() > 10 {
            return Err("Messages are at most 10 characters here.".to_string());
        }
        log.borrow_mut().push(text);
        Ok(())
    });
    let (root, _handle) = render_conversation(p).await;
    let area: HtmlTextAreaElement = find(&root, "textarea").unwrap().unchecked_into();
    let press_enter = |shift: bool| {
        let init = web_sys::KeyboardEventInit::new();
        init.set_key("Enter");
        init.set_shift_key(shift);
        init.set_bubbles(true);
        init.set_cancelable(true);
        let event =
            web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).unwrap();
        area.dispatch_event(&event).unwrap()
    };

    area.set_value("   ");
    press_enter(false);
    settle().await;
    assert!(sent.borrow().is_empty(), "blank messages are not sent");

    area.set_value("hello");
    assert!(
        press_enter(true),
        "Shift+Enter is left to the textarea (a new line)"
    );
    settle().await;
    assert!(sent.borrow().is_empty());
    assert!(!press_enter(false), "Enter is taken to send");
    settle().await;
    assert_eq!(*sent.borrow(), ["hello"]);
    assert_eq!(area.value(), "", "the box is cleared after sending");

    area.set_value("far too long a message");
    press_enter(false);
    settle().await;
    assert_eq!(area.value(), "far too long a message", "the text stays");
    assert_eq!(
        texts(&root, "[role=alert]"),
        ["Messages are at most 10 characters here."]
    );
}

/// SPEC B1, B2, B3, B5: who is typing, ticks on my messages (accessible
/// names "Delivered" / "Read"), the unread badge, and the export button.
#[wasm_bindgen_test]
async fn b1_b2_b3_b5_typing_ticks_unread_and_export() {
    let mut c = dialog(vec![
        message(1, 1, "mine, read"),
        message(2, 1, "mine, delivered"),
        message(3, 2, "theirs, unread"),
    ]);
    c.typing = vec![UserId(2)];
    c.marks = vec![Marks {
        user: UserId(2),
        delivered: Seq(2),
        read: Seq(1),
    }];
    let exported = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = exported.clone();
    let mut p = props(c);
    p.on_export = Callback::from(move |()| count.set(count.get() + 1));
    let (root, _handle) = render_conversation(p).await;

    assert_eq!(texts(&root, ".typing"), ["bob is typing"]);
    let ticks: Vec<String> = {
        let list = root.query_selector_all(".tick[role=img]").unwrap();
        (0..list.length())
            .filter_map(|i| list.item(i))
            .filter_map(|n| n.dyn_into::<Element>().ok())
            .filter_map(|e| e.get_attribute("aria-label"))
            .collect()
    };
    assert_eq!(ticks, ["Read", "Delivered"], "ticks on my messages only");
    let badge = find(&root, ".unread").expect("an unread badge");
    assert_eq!(
        badge.get_attribute("aria-label").as_deref(),
        Some("1 unread")
    );

    let export = root
        .query_selector_all("button.export")
        .unwrap()
        .item(0)
        .expect("an Export transcript button");
    assert_eq!(export.text_content().unwrap(), "Export transcript");
    export.unchecked_into::<HtmlElement>().click();
    settle().await;
    assert_eq!(exported.get(), 1);
}
