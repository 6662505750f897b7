use yew::prelude::*;

use crate::connection::ConnState;

/// The connection's state, announced politely to assistive technology
/// (`role="status"`). While reconnecting it is the banner of SPEC R1.
///
/// A plain view function rather than a component: it holds no state, and
/// each component type costs the app its own copy of Yew's lifecycle code.
pub fn connection_status(state: ConnState) -> Html {
    html! {
        <p role="status" ~className={state.status_class()} data-state={state.css_class()}>
            <span class="conn-dot" aria-hidden="true"></span>
            { state.label() }
        </p>
    }
}
