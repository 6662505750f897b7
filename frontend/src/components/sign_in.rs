use shared::protocol::User;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::api::{self, LoginError};

/// Properties of [`SignIn`].
#[derive(Debug, Clone, PartialEq, Properties)]
pub struct SignInProps {
    /// Called with the user once signed in.
    pub on_signed_in: Callback<User>,
    /// A note to show above the form (e.g. "You were signed out").
    #[prop_or_default]
    pub note: Option<AttrValue>,
}

/// The sign-in page (SPEC S1–S3): a name and a password; the first sign-in
/// with an unused name creates the account. The relay's refusal is shown in
/// an alert, and the form keeps what was typed.
#[component(SignIn)]
pub fn sign_in(props: &SignInProps) -> Html {
    let name = use_node_ref();
    let password = use_node_ref();
    let error = use_state(|| None::<String>);
    let busy = use_state(|| false);

    let onsubmit = {
        let (name, password, error, busy) =
            (name.clone(), password.clone(), error.clone(), busy.clone());
        let on_signed_in = props.on_signed_in.clone();
        Callback::from(move |event: SubmitEvent| {
            event.prevent_default();
            if *busy {
                return;
            }
            let value = |node: &NodeRef| {
                node.cast::<HtmlInputElement>()
                    .map(|input| input.value())
                    .unwrap_or_default()
            };
            let (name_value, password_value) = (value(&name).trim().to_string(), value(&password));
            if name_value.is_empty() || password_value.is_empty() {
                error.set(Some("Enter a name and a password.".into()));
                return;
            }
            busy.set(true);
            let (error, busy, on_signed_in) = (error.clone(), busy.clone(), on_signed_in.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let result = api::login(&name_value, &password_value).await;
                busy.set(false);
                match result {
                    Ok(user) => on_signed_in.emit(user),
                    Err(e) => error.set(Some(login_message(&e))),
                }
            });
        })
    };

    html! {
        <main class="sign-in">
            <form class="sign-in-card" {onsubmit} novalidate=true>
                <h1>{ "Chat" }</h1>
                <p class="hint">{ "Sign in, or pick a new name to create your account." }</p>
                if let Some(note) = &props.note {
                    <p class="note" role="status">{ note.clone() }</p>
                }
                <label for="sign-in-name">{ "Name" }</label>
                <input id="sign-in-name" ref={name} name="name" type="text"
                    autocomplete="username" autocapitalize="none" spellcheck="false"
                    maxlength="32" required=true />
                <label for="sign-in-password">{ "Password" }</label>
                <input id="sign-in-password" ref={password} name="password" type="password"
                    autocomplete="current-password" required=true />
                if let Some(message) = &*error {
                    <p class="error" role="alert">{ message.clone() }</p>
                }
                <button type="submit" disabled={*busy}>{ "Log in" }</button>
            </form>
        </main>
    }
}

fn login_message(error: &LoginError) -> String {
    error.message()
}
