use yew::prelude::*;

use crate::connection::ConnState;

/// Properties of [`ConnectionStatus`].
#[derive(Debug, Clone, PartialEq, Properties)]
pub struct ConnectionStatusProps {
    /// The state to show.
    pub state: ConnState,
}

/// The connection's state, announced politely to assistive technology
/// (`role="status"`). While reconnecting it is the banner of SPEC R1.
#[component(ConnectionStatus)]
pub fn connection_status(props: &ConnectionStatusProps) -> Html {
    let state = props.state;
    html! {
        <p role="status" class={classes!("conn-status", state.css_class())} data-state={state.css_class()}>
            <span class="conn-dot" aria-hidden="true"></span>
            { state.label() }
        </p>
    }
}
