//! The few browser facilities the app uses beyond the DOM that Yew renders:
//! page visibility and focus, the title, desktop notifications, downloads.
//! Each call degrades quietly where the browser lacks the facility.

use gloo_events::EventListener;
use wasm_bindgen::JsCast;
use web_sys::{
    Blob, BlobPropertyBag, HtmlAnchorElement, Notification, NotificationOptions,
    NotificationPermission, Url, VisibilityState,
};

fn document() -> Option<web_sys::Document> {
    web_sys::window().and_then(|w| w.document())
}

/// True when this tab is visible and focused: what it shows is being read
/// (SPEC B2, B4).
pub fn page_active() -> bool {
    document().is_some_and(|d| {
        d.visibility_state() == VisibilityState::Visible && d.has_focus().unwrap_or(false)
    })
}

/// True when the tab is hidden (SPEC B3: notify only then).
pub fn page_hidden() -> bool {
    document().is_some_and(|d| d.visibility_state() == VisibilityState::Hidden)
}

/// Calls `on_change` whenever the tab's visibility or focus changes. The
/// listeners live as long as the returned value.
pub fn watch_activity(on_change: impl Fn(bool) + 'static) -> Vec<EventListener> {
    let Some(window) = web_sys::window() else {
        return Vec::new();
    };
    let on_change = std::rc::Rc::new(on_change);
    let mut listeners = Vec::new();
    for event in ["focus", "blur"] {
        let on_change = on_change.clone();
        listeners.push(EventListener::new(&window, event, move |_| {
            on_change(page_active())
        }));
    }
    if let Some(document) = document() {
        let on_change = on_change.clone();
        listeners.push(EventListener::new(
            &document,
            "visibilitychange",
            move |_| on_change(page_active()),
        ));
    }
    listeners
}

/// Sets the page title.
pub fn set_title(title: &str) {
    if let Some(document) = document() {
        if document.title() != title {
            document.set_title(title);
        }
    }
}

/// Whether desktop notifications may be shown, asked, or are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyPermission {
    /// Not asked yet: the page may offer to ask (on a click, never on load).
    Ask,
    /// Allowed.
    Granted,
    /// Refused, or not available in this browser.
    Unavailable,
}

/// The current notification permission.
pub fn notify_permission() -> NotifyPermission {
    let supported = web_sys::window()
        .is_some_and(|w| js_sys::Reflect::has(&w, &"Notification".into()).unwrap_or(false));
    if !supported {
        return NotifyPermission::Unavailable;
    }
    match Notification::permission() {
        NotificationPermission::Granted => NotifyPermission::Granted,
        NotificationPermission::Default => NotifyPermission::Ask,
        _ => NotifyPermission::Unavailable,
    }
}

/// Asks for permission (call it from a click handler: SPEC B3).
pub async fn request_notify_permission() -> NotifyPermission {
    if let Ok(promise) = Notification::request_permission() {
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    notify_permission()
}

/// Shows a desktop notification if allowed.
pub fn notify(title: &str, body: &str) {
    if notify_permission() != NotifyPermission::Granted {
        return;
    }
    let options = NotificationOptions::new();
    options.set_body(body);
    let _ = Notification::new_with_options(title, &options);
}

/// Offers `text` as a download named `file_name` (SPEC B5).
pub fn download_text(file_name: &str, text: &str) {
    let Some(document) = document() else { return };
    let parts = js_sys::Array::of1(&text.into());
    let options = BlobPropertyBag::new();
    options.set_type("text/plain;charset=utf-8");
    let Ok(blob) = Blob::new_with_str_sequence_and_options(&parts, &options) else {
        return;
    };
    let Ok(url) = Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Some(anchor) = document
        .create_element("a")
        .ok()
        .and_then(|a| a.dyn_into::<HtmlAnchorElement>().ok())
    {
        anchor.set_href(&url);
        anchor.set_download(file_name);
        anchor.click();
    }
    let _ = Url::revoke_object_url(&url);
}
