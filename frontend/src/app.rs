//! The root component: asks the relay who is signed in, then shows the
//! sign-in page or the chat.

use shared::protocol::User;
use yew::prelude::*;

use crate::components::{Chat, SignIn};

#[derive(Debug, Clone, PartialEq)]
enum Auth {
    Checking,
    SignedOut(Option<AttrValue>),
    SignedIn(User),
}

/// The whole app.
#[component(App)]
pub fn app() -> Html {
    let auth = use_state(|| Auth::Checking);
    {
        let auth = auth.clone();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                auth.set(match crate::api::me().await {
                    Ok(Some(user)) => Auth::SignedIn(user),
                    Ok(None) => Auth::SignedOut(None),
                    Err(()) => Auth::SignedOut(Some("Cannot reach the server right now.".into())),
                });
            });
        });
    }
    let on_signed_in = {
        let auth = auth.clone();
        Callback::from(move |user: User| auth.set(Auth::SignedIn(user)))
    };
    let on_signed_out = {
        let auth = auth.clone();
        Callback::from(move |note: Option<AttrValue>| auth.set(Auth::SignedOut(note)))
    };
    match &*auth {
        Auth::Checking => {
            html! { <main class="checking" aria-busy="true"><p>{ "Loading…" }</p></main> }
        }
        Auth::SignedOut(note) => html! { <SignIn {on_signed_in} note={note.clone()} /> },
        Auth::SignedIn(user) => html! { <Chat me={user.clone()} {on_signed_out} /> },
    }
}
