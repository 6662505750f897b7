//! The root component: owns the connection and shows its state.

use yew::prelude::*;

use crate::components::ConnectionStatus;
use crate::connection::{self, ConnState};

/// The whole app.
#[component(App)]
pub fn app() -> Html {
    let state = use_state(|| ConnState::Connecting);
    {
        let state = state.clone();
        use_effect_with((), move |_| {
            let handle = connection::spawn(
                connection::relay_url(),
                Callback::from(move |next| state.set(next)),
            );
            move || handle.stop()
        });
    }
    html! {
        <main class="app">
            <header class="app-header">
                <h1>{ "Chat" }</h1>
                <ConnectionStatus state={*state} />
            </header>
        </main>
    }
}
