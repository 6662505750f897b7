use std::collections::HashMap;

use shared::protocol::{Activity, User, UserId, MAX_PARTICIPANTS};
use yew::prelude::*;

/// Properties of [`OnlineUsers`].
#[derive(Debug, Clone, PartialEq, Properties)]
pub struct OnlineUsersProps {
    /// The other online users, sorted by name.
    pub users: Vec<User>,
    /// Open (or focus) a conversation with these users.
    pub on_open: Callback<Vec<UserId>>,
    /// False while reconnecting: choosing is disabled.
    pub enabled: bool,
    /// How present each user is (SPEC B4).
    #[prop_or_default]
    pub activity: HashMap<UserId, Activity>,
}

/// The list of the other online users (SPEC U1): each one a button named by
/// their name that opens the dialog (C1); tick several to start a group (C10).
#[component(OnlineUsers)]
pub fn online_users(props: &OnlineUsersProps) -> Html {
    // The users ticked for a group, in the order ticked (at most a few).
    let picked = use_state(Vec::<UserId>::new);
    // Forget picks of users who went offline.
    let chosen: Vec<UserId> = picked
        .iter()
        .copied()
        .filter(|id| props.users.iter().any(|u| u.id == *id))
        .collect();

    let start_group = {
        let (picked, on_open, chosen) = (picked.clone(), props.on_open.clone(), chosen.clone());
        Callback::from(move |_: MouseEvent| {
            on_open.emit(chosen.clone());
            picked.set(Vec::new());
        })
    };

    html! {
        <section class="online" aria-labelledby="online-heading">
            <h2 id="online-heading">{ "Online users" }</h2>
            if props.users.is_empty() {
                <p class="empty">{ "Nobody else is online right now." }</p>
            }
            <ul aria-label="Online users" class="user-list">
                { for props.users.iter().map(|user| {
                    let id = user.id;
                    let open = {
                        let on_open = props.on_open.clone();
                        Callback::from(move |_: MouseEvent| on_open.emit(vec![id]))
                    };
                    let toggle = {
                        let picked = picked.clone();
                        Callback::from(move |_: Event| {
                            let mut next = (*picked).clone();
                            match next.iter().position(|p| *p == id) {
                                Some(i) => {
                                    next.remove(i);
                                }
                                None => next.push(id),
                            }
                            picked.set(next);
                        })
                    };
                    let checked = picked.contains(&id);
                    let activity = props.activity.get(&id).copied();
                    html! {
                        <li key={id.0}>
                            <button type="button" class="user" onclick={open} disabled={!props.enabled}>
                                { super::swatch(&user.color) }
                                { user.name.clone() }
                            </button>
                            if let Some(activity) = activity {
                                <span ~className={activity_class(activity)}>{ activity_word(activity) }</span>
                            }
                            <input type="checkbox" class="pick" checked={checked} onchange={toggle}
                                aria-label={format!("Add {} to a group", user.name)} />
                        </li>
                    }
                }) }
            </ul>
            if chosen.len() >= 2 {
                <button type="button" class="start-group" onclick={start_group}
                    disabled={!props.enabled || chosen.len() >= MAX_PARTICIPANTS}>
                    { format!("Start group with {}", chosen.len()) }
                </button>
            }
        </section>
    }
}

/// The CSS classes of that word.
fn activity_class(activity: Activity) -> &'static str {
    match activity {
        Activity::Active => "activity active",
        Activity::Away => "activity away",
        Activity::Reconnecting => "activity reconnecting",
    }
}

/// The word shown next to a name (SPEC B4).
pub fn activity_word(activity: Activity) -> &'static str {
    match activity {
        Activity::Active => "active",
        Activity::Away => "away",
        Activity::Reconnecting => "reconnecting",
    }
}
