//! The app in real browsers against the real relay. Each scenario names the
//! SPEC ids it covers.

use e2e::Stack;
use relay::Config;

const PASSWORD: &str = "correct horse battery";

/// The page loads from the relay, and once its browser is signed in it
/// opens its WebSocket, completes the handshake and says so (SPEC O1, L1,
/// R1's status element).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_browser_gets_connected() -> anyhow::Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let browser = stack.browser().await?;
    browser.open("/").await?;
    browser.wait_for_text("h1", "Chat").await?;
    browser.sign_in_via_api("alice", PASSWORD).await?;
    browser.reload().await?;
    browser.wait_for_text("[role=status]", "Connected").await?;
    browser.close().await
}

/// Independent browsers connect at once; when the relay stops, each page
/// notices and shows the "Reconnecting" banner (SPEC R1, R3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_reconnecting_when_the_relay_goes_away() -> anyhow::Result<()> {
    let mut stack = Stack::start(Config::defaults()).await?;
    let alice = stack.browser().await?;
    let bob = stack.browser().await?;
    for (browser, name) in [(&alice, "alice"), (&bob, "bob")] {
        browser.open("/").await?;
        browser.sign_in_via_api(name, PASSWORD).await?;
        browser.reload().await?;
        browser.wait_for_text("[role=status]", "Connected").await?;
    }
    stack.stop_relay().await?;
    for browser in [&alice, &bob] {
        browser
            .wait_for_text("[role=status]", "Reconnecting")
            .await?;
    }
    alice.close().await?;
    bob.close().await
}
