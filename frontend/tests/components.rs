//! Component tests, run in headless Chromium by wasm-bindgen-test
//! (`cargo xtask test`, or `cargo test --target wasm32-unknown-unknown -p frontend`).
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use frontend::components::ConnectionStatus;
use frontend::connection::{backoff, ws_url, ConnState, MAX_BACKOFF};
use wasm_bindgen_test::*;
use web_sys::Element;
use yew::prelude::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh element in the document to mount a component into.
fn mount_point() -> Element {
    let document = gloo_document();
    let root = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&root).unwrap();
    root
}

fn gloo_document() -> web_sys::Document {
    web_sys::window().unwrap().document().unwrap()
}

#[derive(Properties, PartialEq)]
struct Probe {
    state: ConnState,
}

#[component(StatusProbe)]
fn status_probe(props: &Probe) -> Html {
    html! { <ConnectionStatus state={props.state} /> }
}

async fn render_status(state: ConnState) -> Element {
    let root = mount_point();
    yew::Renderer::<StatusProbe>::with_root_and_props(root.clone(), Probe { state }).render();
    yew::scheduler::flush().await;
    root
}

/// SPEC R1: the state is announced in a `role="status"` element, and while
/// the link is down it says "Reconnecting".
#[wasm_bindgen_test]
async fn connection_status_is_announced_in_a_status_region() {
    for (state, text) in [
        (ConnState::Connecting, "Connecting…"),
        (ConnState::Connected, "Connected"),
        (ConnState::Reconnecting, "Reconnecting…"),
    ] {
        let root = render_status(state).await;
        let status = root
            .query_selector("[role=status]")
            .unwrap()
            .expect("no role=status element");
        assert_eq!(status.text_content().unwrap().trim(), text);
        assert_eq!(
            status.get_attribute("data-state").unwrap(),
            state.css_class()
        );
    }
}

/// SPEC R1: reconnect delays grow exponentially, are jittered, and never
/// exceed 10 s.
#[wasm_bindgen_test]
fn reconnect_backoff_grows_with_jitter_and_is_capped() {
    assert!(backoff(0, 0.0) < backoff(3, 0.0));
    assert!(
        backoff(2, 0.0) < backoff(2, 0.99),
        "jitter changes the delay"
    );
    for attempt in [0, 1, 5, 10, 30, u32::MAX] {
        for jitter in [0.0, 0.5, 0.999, 7.0, -1.0] {
            assert!(backoff(attempt, jitter) <= MAX_BACKOFF);
            assert!(backoff(attempt, jitter) >= Duration::from_millis(125));
        }
    }
    assert!(
        backoff(30, 0.0) >= MAX_BACKOFF / 2,
        "late attempts wait long"
    );
}

#[wasm_bindgen_test]
fn relay_url_follows_the_page_scheme() {
    assert_eq!(ws_url("http:", "localhost:8080"), "ws://localhost:8080/ws");
    assert_eq!(ws_url("https:", "chat.example"), "wss://chat.example/ws");
}
