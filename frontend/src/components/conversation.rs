use std::rc::Rc;
use std::sync::Arc;

use shared::model::{Conversation, Ended, Entry, Pending, Tick};
use shared::protocol::{ChatMessage, ClientMsgId, UserId};
use web_sys::{HtmlElement, HtmlTextAreaElement};
use yew::prelude::*;

/// How close to the bottom (in pixels) still counts as "at the bottom".
const STICK_SLACK: i32 = 32;

/// Properties of [`ConversationView`].
#[derive(Debug, Clone, PartialEq, Properties)]
pub struct ConversationProps {
    /// The conversation, as the model holds it.
    pub conversation: Conversation,
    /// The signed-in user.
    pub me: UserId,
    /// Changes each time this conversation's prompt should get focus (SPEC C1).
    #[prop_or_default]
    pub focus_request: Option<u64>,
    /// False while reconnecting.
    #[prop_or(true)]
    pub connected: bool,
    /// Sends a message; `Err` carries the note to show, and the text stays.
    pub on_send: Callback<String, Result<(), String>>,
    /// Leaves (or, when ended, closes) the conversation (SPEC C8).
    pub on_close: Callback<()>,
    /// Tries a refused message again.
    pub on_retry: Callback<ClientMsgId>,
    /// Drops a refused message.
    pub on_discard: Callback<ClientMsgId>,
    /// The user typed in the box (SPEC B1).
    #[prop_or_default]
    pub on_typing: Callback<()>,
    /// Download the transcript (SPEC B5).
    #[prop_or_default]
    pub on_export: Callback<()>,
}

/// One conversation (SPEC C3–C9): a region named "Conversation with NAMES",
/// its participants, the messages in a `role="log"`, and a textbox labelled
/// "Message" where Enter sends and Shift+Enter starts a new line.
#[component(ConversationView)]
pub fn conversation_view(props: &ConversationProps) -> Html {
    let conversation = &props.conversation;
    let title = conversation.title(props.me);
    let log = use_node_ref();
    let input = use_node_ref();
    let note = use_state(|| None::<String>);
    let stick = use_mut_ref(|| true);

    // Keep the newest message in view while the reader is at the bottom.
    {
        let (log, stick) = (log.clone(), stick.clone());
        use_effect(move || {
            if *stick.borrow() {
                if let Some(log) = log.cast::<HtmlElement>() {
                    log.set_scroll_top(log.scroll_height());
                }
            }
        });
    }
    let onscroll = {
        let (log, stick) = (log.clone(), stick.clone());
        Callback::from(move |_: Event| {
            if let Some(log) = log.cast::<HtmlElement>() {
                let bottom = log.scroll_top() + log.client_height();
                *stick.borrow_mut() = bottom >= log.scroll_height() - STICK_SLACK;
            }
        })
    };
    {
        let input = input.clone();
        use_effect_with(props.focus_request, move |request| {
            if request.is_some() {
                if let Some(input) = input.cast::<HtmlElement>() {
                    let _ = input.focus();
                }
            }
        });
    }

    let submit = {
        let (input, note, on_send, stick) = (
            input.clone(),
            note.clone(),
            props.on_send.clone(),
            stick.clone(),
        );
        Rc::new(move || {
            let Some(area) = input.cast::<HtmlTextAreaElement>() else {
                return;
            };
            let text = area.value();
            if text.trim().is_empty() {
                return; // SPEC C4: blank messages are not sent
            }
            match on_send.emit(text) {
                Ok(()) => {
                    area.set_value("");
                    note.set(None);
                    *stick.borrow_mut() = true;
                }
                Err(problem) => note.set(Some(problem)),
            }
        })
    };
    let onkeydown = {
        let submit = submit.clone();
        Callback::from(move |event: KeyboardEvent| {
            if event.key() == "Enter" && !event.shift_key() && !event.is_composing() {
                event.prevent_default();
                submit();
            }
        })
    };
    let onsubmit = Callback::from(move |event: SubmitEvent| {
        event.prevent_default();
        submit();
    });
    let on_close = {
        let on_close = props.on_close.clone();
        Callback::from(move |_: MouseEvent| on_close.emit(()))
    };
    let on_export = {
        let on_export = props.on_export.clone();
        Callback::from(move |_: MouseEvent| on_export.emit(()))
    };
    let oninput = {
        let on_typing = props.on_typing.clone();
        Callback::from(move |_: InputEvent| on_typing.emit(()))
    };
    let unread = conversation.unread(props.me);
    let typing_line = conversation.typing_line(props.me).unwrap_or_default();

    let live = conversation.is_live();
    let others = conversation.others(props.me);
    let input_id = format!("message-{}", conversation.id.0);
    // Each author's name and colour, made once per render and shared by
    // their messages.
    let authors: Vec<Author> = conversation
        .members
        .iter()
        .map(|u| Author {
            id: u.id,
            name: u.name.clone().into(),
            style: format!("--user-color: {}", u.color).into(),
        })
        .collect();
    let tick = |message: &ChatMessage| conversation.tick(message, props.me);
    html! {
        <section ~className={if live { "conversation" } else { "conversation ended" }} role="region" aria-label={title.clone()}>
            <header class="conversation-header">
                <div class="conversation-title">
                    <h2>
                        { title.clone() }
                        if unread > 0 {
                            <span class="unread" aria-label={format!("{unread} unread")}>{ unread }</span>
                        }
                    </h2>
                    <ul class="participants" aria-label="Participants">
                        { for conversation.members.iter()
                            .filter(|m| m.id == props.me || conversation.participants.contains(&m.id) || !live)
                            .map(|m| html! {
                                <li key={m.id.0}>
                                    { super::swatch(&m.color) }
                                    { if m.id == props.me { format!("{} (you)", m.name) } else { m.name.clone() } }
                                </li>
                            }) }
                    </ul>
                </div>
                <div class="conversation-actions">
                    <button type="button" class="export" onclick={on_export}>{ "Export transcript" }</button>
                    <button type="button" class="close" onclick={on_close}>{ "Close conversation" }</button>
                </div>
            </header>
            <div class="log" role="log" aria-live="polite" aria-label={format!("Messages with {}", others.join(", "))}
                ref={log} {onscroll} tabindex="0">
                { for conversation.entries.iter().map(|entry| match entry {
                    Entry::Message(message) => view_message(message, &authors, tick(message)),
                    Entry::Notice(text) => html! { <p class="notice">{ text.clone() }</p> },
                }) }
                { for conversation.pending.iter().map(|pending| view_pending(conversation, props, pending)) }
            </div>
            <p class="typing" aria-live="polite">{ typing_line }</p>
            if let Some(ended) = conversation.ended {
                <p class="ended-note" role="status">{ ended_text(conversation, ended) }</p>
            }
            <form class="composer" {onsubmit}>
                <label for={input_id.clone()} class="visually-hidden">{ "Message" }</label>
                <textarea id={input_id} ref={input} rows="2" {onkeydown} {oninput}
                    placeholder={ if live { "Write a message… (Enter sends, Shift+Enter for a new line)" } else { "This conversation has ended" } }
                    disabled={!live} />
                <button type="submit" disabled={!live}>{ "Send" }</button>
            </form>
            if let Some(problem) = &*note {
                <p class="compose-error" role="alert">{ problem.clone() }</p>
            }
        </section>
    }
}

/// A message's author as their messages show them: made once per render
/// and shared by their messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Author {
    id: UserId,
    name: AttrValue,
    style: AttrValue,
}

/// One confirmed message (SPEC C9), keyed by its sequence number: a
/// component of its own, handed the model's shared message, so that a
/// render of the conversation (a new message, a tick, a keystroke)
/// re-renders only the messages that changed and not the whole history.
fn view_message(message: &Arc<ChatMessage>, authors: &[Author], tick: Option<Tick>) -> Html {
    let (name, style) = match authors.iter().find(|a| a.id == message.author) {
        Some(author) => (author.name.clone(), author.style.clone()),
        None => (AttrValue::Static("Someone"), AttrValue::default()),
    };
    html! {
        <MessageView key={message.seq.0} message={Arc::clone(message)} {name} {style} {tick} />
    }
}

#[derive(Debug, Clone, PartialEq, Properties)]
struct MessageProps {
    /// Compared by pointer first (`Arc<T: Eq>`): an unchanged message costs
    /// no text comparison.
    message: Arc<ChatMessage>,
    name: AttrValue,
    style: AttrValue,
    tick: Option<Tick>,
}

#[function_component(MessageView)]
fn message_view(props: &MessageProps) -> Html {
    let MessageProps {
        message,
        name,
        style,
        tick,
    } = props;
    html! {
        <article class="message">
            <header>
                <span class="author" style={style.clone()}>{ name.clone() }</span>
                <time datetime={iso_time(message.time)}>{ local_time(message.time) }</time>
                if let Some(tick) = *tick {
                    <span ~className={tick_class(tick)} role="img"
                        aria-label={tick.label()} title={tick.label()}>
                        { match tick { Tick::Sent => "✓", Tick::Delivered | Tick::Read => "✓✓" } }
                    </span>
                }
            </header>
            <p class="text">{ message.text.clone() }</p>
        </article>
    }
}

fn view_pending(conversation: &Conversation, props: &ConversationProps, pending: &Pending) -> Html {
    let me = conversation.member(props.me);
    let name = me.map_or_else(|| "You".to_string(), |u| u.name.clone());
    let color = me.map_or_else(String::new, |u| format!("--user-color: {}", u.color));
    let id = pending.client_id;
    let (on_retry, on_discard) = (props.on_retry.clone(), props.on_discard.clone());
    html! {
        <article ~className={if pending.failed.is_some() { "message pending failed" } else { "message pending" }}
            key={format!("pending-{}", id.0)}>
            <header>
                <span class="author" style={color}>{ name }</span>
                if pending.failed.is_none() {
                    <span class="state">{ "Sending…" }</span>
                }
            </header>
            <p class="text">{ pending.text.clone() }</p>
            if let Some(reason) = &pending.failed {
                <p class="failed-note">
                    { if reason.starts_with("Not sent") { reason.clone() } else { format!("Not sent: {reason}") } }
                    <button type="button" onclick={Callback::from(move |_: MouseEvent| on_retry.emit(id))}>{ "Retry" }</button>
                    <button type="button" onclick={Callback::from(move |_: MouseEvent| on_discard.emit(id))}>{ "Discard" }</button>
                </p>
            }
        </article>
    }
}

/// The CSS classes of a tick.
fn tick_class(tick: Tick) -> &'static str {
    match tick {
        Tick::Sent => "tick sent",
        Tick::Delivered => "tick delivered",
        Tick::Read => "tick read",
    }
}

/// The plain words for why a conversation ended (SPEC C7, C8): the
/// model's, so the page carries them once.
pub fn ended_text(conversation: &Conversation, ended: Ended) -> String {
    conversation.ended_note(ended)
}

/// `HH:MM` in the reader's time zone.
pub fn local_time(unix_ms: u64) -> String {
    let date = js_sys::Date::new(&(unix_ms as f64).into());
    let mut out = String::with_capacity(5);
    push_padded(&mut out, date.get_hours(), 2);
    out.push(':');
    push_padded(&mut out, date.get_minutes(), 2);
    out
}

/// `YYYY-MM-DD HH:MM` in the reader's time zone, for transcripts (SPEC B5).
pub fn local_date_time(unix_ms: u64) -> String {
    let date = js_sys::Date::new(&(unix_ms as f64).into());
    let mut out = String::with_capacity(16);
    push_padded(&mut out, date.get_full_year(), 4);
    out.push('-');
    push_padded(&mut out, date.get_month() + 1, 2);
    out.push('-');
    push_padded(&mut out, date.get_date(), 2);
    out.push(' ');
    push_padded(&mut out, date.get_hours(), 2);
    out.push(':');
    push_padded(&mut out, date.get_minutes(), 2);
    out
}

/// Appends `n` in decimal, zero-padded to at least `width` digits: what
/// `{:0width$}` writes, without the formatting machinery.
fn push_padded(out: &mut String, n: u32, width: u32) {
    // The place of the first digit written (at most 10^9 for a u32).
    let (mut place, mut digits) = (1u32, 1);
    while digits < width || n / place >= 10 {
        place *= 10;
        digits += 1;
    }
    while place > 0 {
        out.push(char::from(b'0' + (n / place % 10) as u8));
        place /= 10;
    }
}

fn iso_time(unix_ms: u64) -> String {
    let date = js_sys::Date::new(&(unix_ms as f64).into());
    date.to_iso_string().into()
}
