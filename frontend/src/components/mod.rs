//! View components. Each takes plain data and callbacks as properties, so
//! each can be rendered on its own in a component test.

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
