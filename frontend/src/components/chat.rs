use std::cell::RefCell;
use std::rc::Rc;

use shared::model::ChatState;
use shared::protocol::{ClientMsg, ClientMsgId, ConversationId, ServerMsg, User, UserId};
use yew::prelude::*;

use crate::browser::{self, NotifyPermission};
use crate::components::conversation::local_date_time;
use crate::components::{connection_status, ConversationView, OnlineUsers};
use crate::connection::{self, ConnState, Event, Link};

/// Properties of [`Chat`].
#[derive(Debug, Clone, PartialEq, Properties)]
pub struct ChatProps {
    /// The signed-in user.
    pub me: User,
    /// The session ended (log out here, elsewhere, or expiry), with a note.
    pub on_signed_out: Callback<Option<AttrValue>>,
}

/// The signed-in page: the connection, the online users and every open
/// conversation. The model ([`ChatState`]) is plain Rust; this component
/// only holds it, feeds it the relay's frames and the user's intents, and
/// re-renders.
#[component(Chat)]
pub fn chat(props: &ChatProps) -> Html {
    let state = use_mut_ref(|| ChatState::new(random_seed()));
    let link = use_mut_ref(|| None::<Link>);
    let conn = use_state(|| ConnState::Connecting);
    let focus = use_state(|| None::<(ConversationId, u64)>);
    let focus_counter = use_mut_ref(|| 0u64);
    let redraw = use_force_update();
    let handlers = use_mut_ref(Vec::<(ConversationId, Handlers)>::new);

    let request_focus = {
        let (focus, focus_counter) = (focus.clone(), focus_counter.clone());
        Rc::new(move |id: ConversationId| {
            let n = *focus_counter.borrow() + 1;
            *focus_counter.borrow_mut() = n;
            focus.set(Some((id, n)));
        })
    };

    {
        let (state, link, conn, redraw) =
            (state.clone(), link.clone(), conn.clone(), redraw.clone());
        let request_focus = request_focus.clone();
        let on_signed_out = props.on_signed_out.clone();
        use_effect_with((), move |_| {
            let hello_state = state.clone();
            let hello = Rc::new(move || hello_state.borrow().hello());
            let (watch_state, watch_redraw) = (state.clone(), redraw.clone());
            let events_link = link.clone();
            let on_event = Callback::from(move |event: Event| match event {
                Event::State(next) => conn.set(next),
                Event::SignedOut => on_signed_out.emit(Some("You were signed out.".into())),
                Event::Frame(msg) => {
                    let welcome = matches!(msg, ServerMsg::Welcome { .. });
                    let focus_to = {
                        let mut model = state.borrow_mut();
                        let alert = notification_for(&model, &msg);
                        model.apply(msg);
                        if let Some(link) = &*events_link.borrow() {
                            if welcome {
                                // SPEC R2, C6: resend what the relay has not confirmed.
                                for resend in model.resends() {
                                    link.send(resend);
                                }
                                // A new connection starts inactive at the relay (SPEC B4).
                                link.send(ClientMsg::Activity {
                                    active: browser::page_active(),
                                });
                            }
                            // SPEC B2, B3: tell the relay what this tab has and shows.
                            for marks in model.marks_updates(browser::page_active()) {
                                link.send(marks);
                            }
                        }
                        if let Some((title, body)) = alert {
                            if browser::page_hidden() {
                                browser::notify(&title, &body);
                            }
                        }
                        model.focus.take()
                    };
                    if let Some(id) = focus_to {
                        request_focus(id);
                    }
                    redraw.force_update();
                }
            });
            let started = connection::spawn(connection::relay_url(), hello, on_event);
            *link.borrow_mut() = Some(started.clone());
            // SPEC B2, B4: focus and visibility changes go to the relay.
            let watch_link = started.clone();
            let listeners = browser::watch_activity(move |active| {
                watch_link.send(ClientMsg::Activity { active });
                if active {
                    for marks in watch_state.borrow_mut().marks_updates(true) {
                        watch_link.send(marks);
                    }
                    watch_redraw.force_update();
                }
            });
            move || {
                drop(listeners);
                started.stop()
            }
        });
    }

    // SPEC B3: the page title starts with "(N) " while N messages are unread.
    {
        let prefix = state.borrow().title_prefix();
        use_effect(move || browser::set_title(&format!("{prefix}Chat")));
    }
    let notify = use_state(browser::notify_permission);
    let on_enable_notifications = {
        let notify = notify.clone();
        Callback::from(move |_: MouseEvent| {
            let notify = notify.clone();
            wasm_bindgen_futures::spawn_local(async move {
                notify.set(browser::request_notify_permission().await);
            });
        })
    };

    let send_frame = {
        let link = link.clone();
        move |msg: ClientMsg| link.borrow().as_ref().is_some_and(|l| l.send(msg))
    };

    let on_open = {
        let (state, send_frame, request_focus) =
            (state.clone(), send_frame.clone(), request_focus.clone());
        Callback::from(move |with: Vec<UserId>| {
            // SPEC C1: a live dialog with this user gets focus without asking.
            if let [user] = with[..] {
                if let Some(id) = state.borrow().dialog_with(user) {
                    return request_focus(id);
                }
            }
            send_frame(state.borrow().open(with));
        })
    };

    let on_log_out = {
        let (link, on_signed_out) = (link.clone(), props.on_signed_out.clone());
        Callback::from(move |_: MouseEvent| {
            if let Some(link) = link.borrow_mut().take() {
                link.stop();
            }
            let on_signed_out = on_signed_out.clone();
            wasm_bindgen_futures::spawn_local(async move {
                crate::api::logout().await;
                on_signed_out.emit(None);
            });
        })
    };

    let model = state.borrow();
    let me = props.me.id;
    // Each conversation's callbacks are made once and kept, so that an
    // unchanged conversation gets equal properties and is not rendered again.
    let mut handlers = handlers.borrow_mut();
    handlers.retain(|(id, _)| model.conversation(*id).is_some());
    for c in &model.conversations {
        let id = c.id;
        if !handlers.iter().any(|(held, _)| *held == id) {
            handlers.push((
                id,
                Handlers {
                    on_send: conversation_send(&state, &send_frame, &redraw, id),
                    on_close: conversation_close(&state, &send_frame, &redraw, id),
                    on_retry: conversation_retry(&state, &send_frame, &redraw, id),
                    on_discard: conversation_discard(&state, &redraw, id),
                    on_typing: conversation_typing(&state, &send_frame, id),
                    on_export: conversation_export(&state, me, id),
                },
            ));
        }
    }
    let connected = *conn == ConnState::Connected;
    html! {
        <div class="chat">
            <header class="app-header">
                <h1>{ "Chat" }</h1>
                { connection_status(*conn) }
                if *notify == NotifyPermission::Ask {
                    <button type="button" class="enable-notifications" onclick={on_enable_notifications}>
                        { "Enable notifications" }
                    </button>
                }
                <span class="me">
                    { super::swatch(&props.me.color) }
                    { props.me.name.clone() }
                </span>
                <button type="button" class="log-out" onclick={on_log_out}>{ "Log out" }</button>
            </header>
            if let Some(notice) = &model.notice {
                <p class="toast" role="status">{ notice.clone() }</p>
            }
            <div class="chat-body">
                <aside class="sidebar">
                    <OnlineUsers users={model.online.clone()} on_open={on_open} enabled={connected}
                        activity={model.activity.clone()} />
                </aside>
                <div class="conversations">
                    if model.conversations.is_empty() {
                        <p class="empty-conversations">
                            { "Choose someone in the list to start a conversation, or tick several people to start a group." }
                        </p>
                    }
                    { for model.conversations.iter().map(|c| {
                        let id = c.id;
                        let focus_request = focus.and_then(|(target, n)| (target == id).then_some(n));
                        let Some((_, h)) = handlers.iter().find(|(held, _)| *held == id) else {
                            return Html::default();
                        };
                        html! {
                            <ConversationView key={id.0}
                                conversation={c.clone()}
                                {me}
                                {focus_request}
                                {connected}
                                on_send={h.on_send.clone()}
                                on_close={h.on_close.clone()}
                                on_retry={h.on_retry.clone()}
                                on_discard={h.on_discard.clone()}
                                on_typing={h.on_typing.clone()}
                                on_export={h.on_export.clone()} />
                        }
                    }) }
                </div>
            </div>
        </div>
    }
}

type Model = Rc<RefCell<ChatState>>;

/// The callbacks one conversation's view is given.
#[derive(Debug)]
struct Handlers {
    on_send: Callback<String, Result<(), String>>,
    on_close: Callback<()>,
    on_retry: Callback<ClientMsgId>,
    on_discard: Callback<ClientMsgId>,
    on_typing: Callback<()>,
    on_export: Callback<()>,
}

fn conversation_send(
    state: &Model,
    send_frame: &(impl Fn(ClientMsg) -> bool + Clone + 'static),
    redraw: &UseForceUpdateHandle,
    id: ConversationId,
) -> Callback<String, Result<(), String>> {
    let (state, send_frame, redraw) = (state.clone(), send_frame.clone(), redraw.clone());
    Callback::from(move |text: String| {
        let frame = state
            .borrow_mut()
            .send(id, &text)
            .map_err(|e| e.to_string())?;
        // Not connected: it stays pending and is resent after the next welcome.
        send_frame(frame);
        redraw.force_update();
        Ok(())
    })
}

fn conversation_close(
    state: &Model,
    send_frame: &(impl Fn(ClientMsg) -> bool + Clone + 'static),
    redraw: &UseForceUpdateHandle,
    id: ConversationId,
) -> Callback<()> {
    let (state, send_frame, redraw) = (state.clone(), send_frame.clone(), redraw.clone());
    Callback::from(move |()| {
        let frame = state.borrow_mut().close(id);
        if let Some(frame) = frame {
            if !send_frame(frame) {
                state.borrow_mut().notice = Some("Not connected: try again in a moment.".into());
            }
        }
        redraw.force_update();
    })
}

fn conversation_retry(
    state: &Model,
    send_frame: &(impl Fn(ClientMsg) -> bool + Clone + 'static),
    redraw: &UseForceUpdateHandle,
    id: ConversationId,
) -> Callback<ClientMsgId> {
    let (state, send_frame, redraw) = (state.clone(), send_frame.clone(), redraw.clone());
    Callback::from(move |client_id| {
        let frame = state.borrow_mut().retry(id, client_id);
        if let Some(frame) = frame {
            send_frame(frame);
        }
        redraw.force_update();
    })
}

fn conversation_discard(
    state: &Model,
    redraw: &UseForceUpdateHandle,
    id: ConversationId,
) -> Callback<ClientMsgId> {
    let (state, redraw) = (state.clone(), redraw.clone());
    Callback::from(move |client_id| {
        state.borrow_mut().discard(id, client_id);
        redraw.force_update();
    })
}

fn conversation_typing(
    state: &Model,
    send_frame: &(impl Fn(ClientMsg) -> bool + Clone + 'static),
    id: ConversationId,
) -> Callback<()> {
    let (state, send_frame) = (state.clone(), send_frame.clone());
    Callback::from(move |()| {
        let frame = state.borrow_mut().typing(id, js_sys::Date::now());
        if let Some(frame) = frame {
            send_frame(frame);
        }
    })
}

fn conversation_export(state: &Model, me: UserId, id: ConversationId) -> Callback<()> {
    let state = state.clone();
    Callback::from(move |()| {
        let model = state.borrow();
        if let Some(conversation) = model.conversation(id) {
            let text = conversation.transcript(local_date_time);
            browser::download_text(&conversation.transcript_file_name(me), &text);
        }
    })
}

/// A desktop notification for a new message from someone else (SPEC B3).
fn notification_for(model: &ChatState, msg: &ServerMsg) -> Option<(String, String)> {
    let ServerMsg::Message {
        conversation,
        message,
    } = msg
    else {
        return None;
    };
    let me = model.me.as_ref()?.id;
    if message.author == me {
        return None;
    }
    let conversation = model.conversation(*conversation)?;
    if message.seq <= conversation.last_seq {
        return None; // already shown
    }
    let author = conversation.member(message.author)?.name.clone();
    Some((author, message.text.chars().take(200).collect()))
}

/// A seed for client message ids, random per page load (53 bits).
fn random_seed() -> u64 {
    (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64
}
