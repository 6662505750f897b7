//! View components. Each takes plain data and callbacks as properties, so
//! each can be rendered on its own in a component test.
//!
//! A class that depends on state is set as the element's `className`
//! property (`~className={..}`): the same `class` in the page, but a
//! `class={..}` that is not a literal goes through Yew's `Classes` (a set
//! of strings, split and joined again at every render), whose code is
//! 1.6 KiB of the app gzipped.

mod chat;
mod connection_status;
pub mod conversation;
mod online_users;
mod sign_in;

pub use chat::{Chat, ChatProps};
pub use connection_status::connection_status;
pub use conversation::{ended_text, local_time, ConversationProps, ConversationView};
pub use online_users::{activity_word, OnlineUsers, OnlineUsersProps};
pub use sign_in::{SignIn, SignInProps};

use yew::{html, Html};

/// A user's colour swatch: one function for the three places that show
/// one, so the app carries its code once.
fn swatch(color: &str) -> Html {
    html! {
        <span class="swatch" aria-hidden="true" style={format!("--user-color: {color}")}></span>
    }
}
