//! The app in real browsers against the real relay: each `Browser` is an
//! independent headless Chromium with its own cookies, driven as a person
//! would drive it. Each scenario names the SPEC ids it covers.

use std::time::Duration;

use anyhow::{ensure, Result};
use e2e::{Browser, Stack};
use relay::Config;

const PASSWORD: &str = "correct horse battery";

fn quick() -> Config {
    let mut config = Config::defaults();
    config.heartbeat_interval = Duration::from_millis(500);
    config.heartbeat_timeout = Duration::from_secs(2);
    config.offline_grace = Duration::from_secs(1);
    config
}

async fn signed_in(stack: &Stack, name: &str) -> Result<Browser> {
    let browser = stack.browser().await?;
    browser.sign_in(name, PASSWORD).await?;
    Ok(browser)
}

/// Signs alice and bob in, each in their own browser, and opens their dialog.
async fn alice_and_bob_in_a_dialog(stack: &Stack) -> Result<(Browser, Browser)> {
    let alice = signed_in(stack, "alice").await?;
    let bob = signed_in(stack, "bob").await?;
    alice
        .wait_for_text("ul[aria-label='Online users']", "bob")
        .await?;
    dialog(&alice, &bob).await?;
    Ok((alice, bob))
}

/// Opens the dialog between the two and waits until both show it.
async fn dialog(alice: &Browser, bob: &Browser) -> Result<()> {
    alice.choose_user("bob").await?;
    alice.wait_for_conversation("Conversation with bob").await?;
    bob.wait_for_conversation("Conversation with alice").await?;
    Ok(())
}

/// SPEC S1, S2, O1, R1: the page comes from the relay; the first sign-in
/// creates the account and connects; a wrong password is refused in an
/// alert and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_then_a_wrong_password_is_refused() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let alice = stack.browser().await?;
    alice.open("/").await?;
    alice.wait_for_text("h1", "Chat").await?;
    alice.submit_sign_in("alice", PASSWORD).await?;
    alice.wait_for_text("[role=status]", "Connected").await?;
    alice.wait_for_text(".me", "alice").await?;

    let mallory = stack.browser().await?;
    mallory.open("/").await?;
    mallory.submit_sign_in("ALICE", "guessing-wrong").await?;
    mallory
        .wait_for_text("[role=alert]", "Wrong name or password")
        .await?;
    ensure!(
        mallory.exists("#sign-in-name").await?,
        "still on the sign-in page"
    );

    let newcomer = stack.browser().await?;
    newcomer.open("/").await?;
    newcomer.submit_sign_in("no", PASSWORD).await?;
    newcomer.wait_for_text("[role=alert]", "3").await?;
    for b in [alice, mallory, newcomer] {
        b.close().await?;
    }
    Ok(())
}

/// SPEC U1, C1, C2, C5, C9: both see each other (never themselves); a
/// dialog carries messages both ways; 20 quick messages arrive in order,
/// without duplicates, in every tab; markup stays text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_both_ways_twenty_quick_messages_in_order() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let alice = signed_in(&stack, "alice").await?;
    let bob = signed_in(&stack, "bob").await?;
    alice
        .wait_for_text("ul[aria-label='Online users']", "bob")
        .await?;
    bob.wait_for_text("ul[aria-label='Online users']", "alice")
        .await?;
    ensure!(
        alice.online_users().await? == ["bob"],
        "alice sees only bob"
    );
    ensure!(
        bob.online_users().await? == ["alice"],
        "bob sees only alice"
    );

    dialog(&alice, &bob).await?;
    alice
        .send_message("Conversation with bob", "hello bob")
        .await?;
    bob.send_message(
        "Conversation with alice",
        "hi alice <b>bold</b> <img src=x onerror=alert(1)>",
    )
    .await?;
    for i in 1..=20 {
        alice
            .send_message("Conversation with bob", &format!("quick {i}"))
            .await?;
    }
    let expected: Vec<(String, String)> = [
        ("alice", "hello bob".to_string()),
        (
            "bob",
            "hi alice <b>bold</b> <img src=x onerror=alert(1)>".to_string(),
        ),
    ]
    .into_iter()
    .map(|(a, t)| (a.to_string(), t))
    .chain((1..=20).map(|i| ("alice".to_string(), format!("quick {i}"))))
    .collect();
    for (browser, title) in [
        (&alice, "Conversation with bob"),
        (&bob, "Conversation with alice"),
    ] {
        let seen = browser
            .eventually(Duration::from_secs(10), "all 22 messages", || async {
                let seen = browser.messages(title).await?;
                Ok((seen.len() >= expected.len()).then_some(seen))
            })
            .await?;
        ensure!(seen == expected, "{title}: {seen:?}");
    }
    // The markup was shown as text: no element was made from it.
    ensure!(
        !bob.exists("[role=log] b, [role=log] img").await?,
        "markup became elements"
    );
    alice.close().await?;
    bob.close().await
}

/// SPEC C2, C1: a second tab shows the conversation with its history and
/// stays in sync; a double click and a simultaneous choice give one dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_has_the_history_and_one_dialog_from_both_sides() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let alice = signed_in(&stack, "alice").await?;
    let bob = signed_in(&stack, "bob").await?;
    alice
        .wait_for_text("ul[aria-label='Online users']", "bob")
        .await?;
    bob.wait_for_text("ul[aria-label='Online users']", "alice")
        .await?;

    // Both choose each other at once; alice double-clicks.
    let (a, b) = tokio::join!(
        async {
            alice.choose_user("bob").await?;
            alice.choose_user("bob").await
        },
        bob.choose_user("alice")
    );
    a?;
    b?;
    alice.wait_for_conversation("Conversation with bob").await?;
    bob.wait_for_conversation("Conversation with alice").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        alice.texts("section[role=region]").await?.len() == 1,
        "alice has one conversation"
    );
    ensure!(
        bob.texts("section[role=region]").await?.len() == 1,
        "bob has one conversation"
    );

    alice
        .send_message("Conversation with bob", "before the second tab")
        .await?;
    bob.eventually(Duration::from_secs(5), "the first message", || async {
        Ok((bob.messages("Conversation with alice").await?.len() == 1).then_some(()))
    })
    .await?;

    // A second tab of bob's browser: same cookie, same conversations.
    let first = bob.client().window().await?;
    let tab = bob.client().new_window(true).await?;
    bob.client().switch_to_window(tab.handle).await?;
    bob.open("/").await?;
    bob.wait_for_text("[role=status]", "Connected").await?;
    bob.wait_for_conversation("Conversation with alice").await?;
    let history = bob.messages("Conversation with alice").await?;
    ensure!(
        history == [("alice".to_string(), "before the second tab".to_string())],
        "{history:?}"
    );

    bob.send_message("Conversation with alice", "from the second tab")
        .await?;
    bob.switch_back(first).await?;
    bob.eventually(
        Duration::from_secs(5),
        "the second tab's message in the first",
        || async { Ok((bob.messages("Conversation with alice").await?.len() == 2).then_some(())) },
    )
    .await?;
    alice.close().await?;
    bob.close().await
}

/// SPEC U3, C7: a reload ends nothing; closing all of one user's tabs ends
/// the dialog for the other within the heartbeat timeout plus the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_nothing_but_leaving_for_good_ends_the_dialog() -> Result<()> {
    let stack = Stack::start(quick()).await?;
    let (alice, bob) = alice_and_bob_in_a_dialog(&stack).await?;
    alice
        .send_message("Conversation with bob", "still here?")
        .await?;

    bob.reload().await?;
    bob.wait_for_text("[role=status]", "Connected").await?;
    bob.wait_for_conversation("Conversation with alice").await?;
    bob.eventually(
        Duration::from_secs(5),
        "history after the reload",
        || async { Ok((bob.messages("Conversation with alice").await?.len() == 1).then_some(())) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // longer than the grace
    ensure!(
        !alice.exists(".conversation.ended").await?,
        "a reload must not end the dialog"
    );

    let started = std::time::Instant::now();
    bob.close().await?;
    alice
        .wait_for_text(".ended-note", "bob went offline")
        .await?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(4),
        "ended after {took:?}: more than heartbeat + grace"
    );
    let disabled = alice
        .client()
        .find(fantoccini::Locator::Css("section[role=region] textarea"))
        .await?
        .attr("disabled")
        .await?;
    ensure!(
        disabled.is_some(),
        "the prompt of an ended dialog is disabled"
    );
    ensure!(alice.online_users().await?.is_empty(), "bob left the list");
    ensure!(
        alice.messages("Conversation with bob").await?.len() == 1,
        "it stays readable"
    );
    alice.close().await
}

/// SPEC S5: log out signs out every tab of this browser, and only this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_signs_out_every_tab_of_this_browser() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let laptop = signed_in(&stack, "alice").await?;
    let phone = signed_in(&stack, "alice").await?;
    let first = laptop.client().window().await?;
    let tab = laptop.client().new_window(true).await?;
    laptop.client().switch_to_window(tab.handle).await?;
    laptop.open("/").await?;
    laptop.wait_for_text("[role=status]", "Connected").await?;

    laptop.click_button(None, "Log out").await?;
    laptop.wait_for("#sign-in-name").await?;
    laptop.switch_back(first).await?;
    let started = std::time::Instant::now();
    laptop.wait_for("#sign-in-name").await?;
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "the other tab took {:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    phone.wait_for_text("[role=status]", "Connected").await?;
    ensure!(
        !phone.exists("#sign-in-name").await?,
        "another browser stays signed in"
    );
    laptop.close().await?;
    phone.close().await
}

/// SPEC R1, R2, S4: when the relay restarts, pages show "Reconnecting",
/// come back signed in, and say plainly which conversations the restart ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_keeps_people_signed_in_and_says_what_ended() -> Result<()> {
    let db = std::env::temp_dir().join(format!("chat-e2e-restart-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let mut config = Config::defaults();
    config.db = db.clone();
    let mut stack = Stack::start(config).await?;
    let (alice, bob) = alice_and_bob_in_a_dialog(&stack).await?;
    alice
        .send_message("Conversation with bob", "before the restart")
        .await?;

    stack.stop_relay().await?;
    for browser in [&alice, &bob] {
        browser
            .wait_for_text("[role=status]", "Reconnecting")
            .await?;
    }
    stack.start_relay().await?;
    for browser in [&alice, &bob] {
        browser
            .eventually(Duration::from_secs(15), "reconnected", || async {
                Ok(browser
                    .texts("[role=status]")
                    .await?
                    .iter()
                    .any(|t| t == "Connected")
                    .then_some(()))
            })
            .await?;
    }
    alice
        .wait_for_text(".ended-note", "ended when the server restarted")
        .await?;
    ensure!(
        alice.messages("Conversation with bob").await?.len() == 1,
        "the old messages stay readable"
    );
    alice
        .wait_for_text("ul[aria-label='Online users']", "bob")
        .await?;
    alice.close().await?;
    bob.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(())
}

/// SPEC C10, C8, C1: a group started from the list reaches everyone; one
/// closes it and the others see "NAME left" and go on; choosing a user
/// whose dialog is open focuses its prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_from_the_list_and_closing_a_conversation() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let alice = signed_in(&stack, "alice").await?;
    let bob = signed_in(&stack, "bob").await?;
    let carol = signed_in(&stack, "carol").await?;
    alice
        .eventually(Duration::from_secs(5), "bob and carol online", || async {
            Ok((alice.online_users().await? == ["bob", "carol"]).then_some(()))
        })
        .await?;

    for name in ["bob", "carol"] {
        alice
            .client()
            .find(fantoccini::Locator::Css(&format!(
                "input[aria-label='Add {name} to a group']"
            )))
            .await?
            .click()
            .await?;
    }
    alice.click_button(None, "Start group with 2").await?;
    alice
        .wait_for_conversation("Conversation with bob, carol")
        .await?;
    bob.wait_for_conversation("Conversation with alice, carol")
        .await?;
    carol
        .wait_for_conversation("Conversation with alice, bob")
        .await?;
    carol
        .send_message("Conversation with alice, bob", "hi both")
        .await?;
    for (b, title) in [
        (&alice, "Conversation with bob, carol"),
        (&bob, "Conversation with alice, carol"),
    ] {
        b.eventually(Duration::from_secs(5), "carol's message", || async {
            Ok((b.messages(title).await?.len() == 1).then_some(()))
        })
        .await?;
    }

    let group = Browser::conversation("Conversation with alice, bob");
    carol
        .click_button(Some(&group), "Close conversation")
        .await?;
    carol
        .eventually(
            Duration::from_secs(5),
            "the group gone from carol's page",
            || async { Ok((!carol.exists("section[role=region]").await?).then_some(())) },
        )
        .await?;
    alice
        .wait_for_text("[role=log] .notice", "carol left")
        .await?;
    bob.send_message("Conversation with alice", "just us now")
        .await?;
    alice
        .eventually(
            Duration::from_secs(5),
            "bob's message after carol left",
            || async {
                let titles = alice.texts("section[role=region] h2").await?;
                Ok(titles
                    .contains(&"Conversation with bob".to_string())
                    .then_some(()))
            },
        )
        .await?;

    // C1: with the dialog already open, choosing bob focuses its prompt.
    alice.choose_user("bob").await?;
    let focused = alice
        .eventually(Duration::from_secs(5), "the prompt focused", || async {
            let id = alice.focused_id().await?;
            Ok(id.starts_with("message-").then_some(id))
        })
        .await?;
    ensure!(
        alice.texts("section[role=region]").await?.len() == 1,
        "no second conversation"
    );
    ensure!(!focused.is_empty());
    for b in [alice, bob, carol] {
        b.close().await?;
    }
    Ok(())
}

/// SPEC S3: repeated failures are throttled and the form shows the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_shows_the_wait_after_repeated_failures() -> Result<()> {
    let mut config = Config::defaults();
    config.login_failures_per_name = 2;
    let stack = Stack::start(config).await?;
    let alice = signed_in(&stack, "alice").await?;
    let mallory = stack.browser().await?;
    mallory.open("/").await?;
    for _ in 0..2 {
        mallory.submit_sign_in("alice", "not-her-password").await?;
        mallory
            .wait_for_text("[role=alert]", "Wrong name or password")
            .await?;
    }
    mallory.submit_sign_in("alice", "not-her-password").await?;
    mallory
        .wait_for_text("[role=alert]", "Try again in")
        .await?;
    alice.close().await?;
    mallory.close().await
}

/// The page renders as a person sees it, wide and on a 360-px phone; the
/// screenshots land in `target/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_wide_and_phone() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let alice = signed_in(&stack, "alice").await?;
    let bob = signed_in(&stack, "bob").await?;
    let carol = signed_in(&stack, "carol").await?;
    alice
        .eventually(Duration::from_secs(5), "bob and carol online", || async {
            Ok((alice.online_users().await?.len() == 2).then_some(()))
        })
        .await?;
    dialog(&alice, &bob).await?;
    bob.send_message("Conversation with alice", "Hi Alice! Lunch at noon?")
        .await?;
    alice
        .send_message("Conversation with bob", "Yes, see you there.")
        .await?;
    carol.choose_user("alice").await?;
    carol
        .wait_for_conversation("Conversation with alice")
        .await?;
    carol
        .send_message(
            "Conversation with alice",
            "Did you see the new design? It looks great.",
        )
        .await?;
    alice
        .wait_for_text(
            &Browser::conversation("Conversation with carol"),
            "It looks great.",
        )
        .await?;

    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    alice.resize(1280, 720).await?;
    ensure!(
        alice.screenshot(&dir.join("wide.png")).await? > 10_000,
        "a blank screenshot"
    );
    alice.resize(360, 740).await?;
    ensure!(
        alice.screenshot(&dir.join("phone.png")).await? > 5_000,
        "a blank screenshot"
    );
    // On a phone nothing is wider than the screen.
    let overflow = alice
        .client()
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await?;
    ensure!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page scrolls sideways by {overflow} px"
    );
    for b in [alice, bob, carol] {
        b.close().await?;
    }
    Ok(())
}

/// SPEC B1, B2, B4 between two browsers: "alice is typing" shows and clears
/// when she sends; her messages get "Read" while bob's tab is in front and
/// "Delivered" while it is in the background; bob is shown active, then
/// away, then active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_ticks_and_presence_states_between_browsers() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let (alice, bob) = alice_and_bob_in_a_dialog(&stack).await?;
    alice
        .wait_for_text(".user-list .activity", "active")
        .await?;

    alice.type_message("Conversation with bob", "hello").await?;
    bob.wait_for_text(".typing", "alice is typing").await?;
    alice
        .type_message(
            "Conversation with bob",
            &fantoccini::key::Key::Enter.to_string(),
        )
        .await?;
    bob.eventually(
        Duration::from_secs(5),
        "the typing line cleared",
        || async {
            Ok(bob
                .texts(".typing")
                .await?
                .iter()
                .all(|t| t.is_empty())
                .then_some(()))
        },
    )
    .await?;
    alice
        .wait_for("[role=log] .tick[aria-label='Read']")
        .await?;

    // Bob's chat goes to the background: he is away, and new messages are
    // delivered but not read.
    let chat_tab = bob.client().window().await?;
    let other = bob.client().new_window(true).await?;
    bob.client().switch_to_window(other.handle).await?;
    alice.wait_for_text(".user-list .activity", "away").await?;
    alice
        .send_message("Conversation with bob", "are you there?")
        .await?;
    let last_tick = "[role=log] article.message:last-of-type .tick";
    alice
        .eventually(
            Duration::from_secs(5),
            "Delivered on the second message",
            || async {
                let labels = alice.attributes(last_tick, "aria-label").await?;
                Ok((labels == ["Delivered"]).then_some(()))
            },
        )
        .await?;

    // Back in front: read, and active again.
    bob.switch_back(chat_tab).await?;
    alice
        .eventually(
            Duration::from_secs(5),
            "Read on the second message",
            || async {
                let labels = alice.attributes(last_tick, "aria-label").await?;
                Ok((labels == ["Read"]).then_some(()))
            },
        )
        .await?;
    alice
        .wait_for_text(".user-list .activity", "active")
        .await?;
    alice.close().await?;
    bob.close().await
}

/// SPEC B3, B5: messages arriving while the page is hidden count as unread
/// (badge and "(N) " in the title) until it is shown again; the transcript
/// downloads as one line per message, with time, author and text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_in_the_title_and_the_transcript_download() -> Result<()> {
    let stack = Stack::start(Config::defaults()).await?;
    let (alice, bob) = alice_and_bob_in_a_dialog(&stack).await?;
    // Notifications are offered, never asked for on load (a headless
    // browser refuses any request, which would show as "denied").
    let permission = bob
        .client()
        .execute("return Notification.permission;", vec![])
        .await?;
    ensure!(
        permission == "default",
        "permission was asked for: {permission}"
    );
    bob.wait_for_text("button.enable-notifications", "Enable notifications")
        .await?;

    bob.client().minimize_window().await?;
    bob.eventually(Duration::from_secs(5), "the page hidden", || async {
        let hidden = bob
            .client()
            .execute("return document.visibilityState;", vec![])
            .await?;
        Ok((hidden == "hidden").then_some(()))
    })
    .await?;
    alice.send_message("Conversation with bob", "first").await?;
    // Shift+Enter starts a new line in the same message (SPEC C4).
    use fantoccini::key::Key;
    let two_lines = format!("second{}{}{}line", Key::Shift, Key::Enter, Key::Null);
    alice
        .send_message("Conversation with bob", &two_lines)
        .await?;
    let title = bob
        .eventually(
            Duration::from_secs(5),
            "the title to count 2 unread",
            || async {
                let title = bob.client().title().await?;
                Ok(title.starts_with("(2) ").then_some(title))
            },
        )
        .await?;
    ensure!(title == "(2) Chat", "{title}");
    let badge = bob.attributes(".unread", "aria-label").await?;
    ensure!(badge == ["2 unread"], "{badge:?}");

    bob.client().maximize_window().await?;
    bob.eventually(
        Duration::from_secs(5),
        "reading clears the count",
        || async { Ok((bob.client().title().await? == "Chat").then_some(())) },
    )
    .await?;

    // The transcript, captured as the page hands it to the browser.
    bob.client()
        .execute(
            "window.__blobs = []; const original = URL.createObjectURL;
             URL.createObjectURL = b => { window.__blobs.push(b); return original(b); };",
            vec![],
        )
        .await?;
    bob.click_button(
        Some(&Browser::conversation("Conversation with alice")),
        "Export transcript",
    )
    .await?;
    let text = bob
        .client()
        .execute_async(
            "const done = arguments[0]; window.__blobs[0].text().then(done);",
            vec![],
        )
        .await?;
    let text = text.as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 2, "one line per message: {text:?}");
    ensure!(lines[0].ends_with(" alice: first"), "{text:?}");
    ensure!(lines[1].ends_with(" alice: second\\nline"), "{text:?}");
    ensure!(
        lines[0].len() > "2026-01-01 00:00 alice: first".len() - 1,
        "a time: {text:?}"
    );
    alice.close().await?;
    bob.close().await
}

/// SPEC C9, L7: a corpus of XSS payloads sent through the relay and
/// rendered in a real browser: 0 executions, 0 injected elements, every
/// payload shown exactly as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xss_payloads_render_as_text_and_never_run() -> Result<()> {
    const PAYLOADS: &[&str] = &[
        "<script>window.__xss=(window.__xss||0)+1</script>",
        "<img src=x onerror=\"window.__xss=(window.__xss||0)+1\">",
        "<svg onload=window.__xss=(window.__xss||0)+1>",
        "<svg><script>window.__xss=1</script></svg>",
        "<iframe src=\"javascript:parent.__xss=1\"></iframe>",
        "<iframe srcdoc=\"<script>parent.__xss=1</script>\"></iframe>",
        "<a href=\"javascript:window.__xss=1\">click</a>",
        "<body onload=window.__xss=1>",
        "<details open ontoggle=window.__xss=1>",
        "<video><source onerror=\"window.__xss=1\"></video>",
        "<input autofocus onfocus=window.__xss=1>",
        "<marquee onstart=window.__xss=1>",
        "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
        "\"><img src=x onerror=window.__xss=1>",
        "'><svg/onload=window.__xss=1>",
        "</textarea><script>window.__xss=1</script>",
        "</p></article><img src=x onerror=window.__xss=1>",
        "<style>*{display:none}</style>",
        "<meta http-equiv=\"refresh\" content=\"0;url=javascript:window.__xss=1\">",
        "<object data=\"javascript:window.__xss=1\"></object>",
        "<embed src=\"javascript:window.__xss=1\">",
        "<form><button formaction=javascript:window.__xss=1>x</button></form>",
        "<base href=\"javascript:window.__xss=1//\">",
        "<link rel=stylesheet href=\"javascript:window.__xss=1\">",
        "<div style=\"background:url(javascript:window.__xss=1)\">",
        "&lt;script&gt;window.__xss=1&lt;/script&gt;",
        "{{constructor.constructor('window.__xss=1')()}}",
        "${window.__xss=1}",
        "javascript:window.__xss=1",
        "<noscript><p title=\"</noscript><img src=x onerror=window.__xss=1>\">",
        "<template><script>window.__xss=1</script></template>",
        "\u{202e}<script>window.__xss=1</script>",
    ];
    let stack = Stack::start(Config::defaults()).await?;
    let (alice, bob) = alice_and_bob_in_a_dialog(&stack).await?;
    // Whatever the page's Content-Security-Policy refuses from here on is noted.
    for browser in [&alice, &bob] {
        browser
            .client()
            .execute(
                "window.__refused = []; document.addEventListener('securitypolicyviolation', \
                 e => window.__refused.push(e.violatedDirective + ' ' + e.blockedURI));",
                vec![],
            )
            .await?;
    }
    for payload in PAYLOADS {
        // Typed as the user would; WebDriver types the text literally.
        alice.send_message("Conversation with bob", payload).await?;
    }
    let title = "Conversation with alice";
    let seen = bob
        .eventually(Duration::from_secs(15), "every payload", || async {
            let seen = bob.messages(title).await?;
            Ok((seen.len() >= PAYLOADS.len()).then_some(seen))
        })
        .await?;
    let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    ensure!(texts == PAYLOADS, "shown differently: {texts:?}");
    tokio::time::sleep(Duration::from_millis(500)).await; // let anything that would run, run
    for browser in [&alice, &bob] {
        let ran = browser
            .client()
            .execute("return window.__xss === undefined;", vec![])
            .await?;
        ensure!(ran == true, "a payload ran");
        let injected = browser
            .client()
            .execute(
                "return document.querySelectorAll('[role=log] .text *').length;",
                vec![],
            )
            .await?;
        ensure!(injected == 0, "{injected} elements were injected");
        // The app itself (its styles, colours, sockets) needs nothing the
        // policy refuses ...
        let refused = browser
            .client()
            .execute("return window.__refused;", vec![])
            .await?;
        ensure!(
            refused == serde_json::json!([]),
            "the policy refused: {refused}"
        );
        // ... and a script that did get into the page would not run.
        let blocked = browser
            .client()
            .execute(
                "const s = document.createElement('script'); \
                 s.textContent = 'window.__xss = 1'; document.head.appendChild(s); \
                 return window.__xss === undefined;",
                vec![],
            )
            .await?;
        ensure!(blocked == true, "an injected inline script ran");
        // The refusal is reported after the fact.
        browser
            .eventually(Duration::from_secs(5), "the refusal reported", || async {
                let refused = browser
                    .client()
                    .execute("return window.__refused;", vec![])
                    .await?;
                Ok(refused
                    .as_array()
                    .is_some_and(|r| {
                        r.len() == 1 && r[0].as_str().is_some_and(|d| d.starts_with("script-src"))
                    })
                    .then_some(()))
            })
            .await?;
    }
    println!(
        "figure: {} payloads, 0 executions, 0 injected elements, 0 refusals by the \
         Content-Security-Policy; an inline script added to the page is refused",
        PAYLOADS.len()
    );
    alice.close().await?;
    bob.close().await
}

/// SPEC O4: two relays on one Redis serve one chat. Alice's browser talks
/// to relay A, bob's to relay B: they see each other, open their dialog and
/// talk both ways, and both pages show the same messages in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_redis_serve_one_chat() -> Result<()> {
    let redis = e2e::Redis::start().await?;
    let mut config = quick();
    config.redis = Some(redis.url().to_string());
    let mut stack = Stack::start(config).await?;
    let relay_b = stack.start_peer().await?;
    let alice = signed_in(&stack, "alice").await?;
    let bob = stack.browser_at(&relay_b).await?;
    bob.sign_in("bob", PASSWORD).await?;
    alice
        .wait_for_text("ul[aria-label='Online users']", "bob")
        .await?;
    bob.wait_for_text("ul[aria-label='Online users']", "alice")
        .await?;
    dialog(&alice, &bob).await?;
    alice
        .send_message("Conversation with bob", "hello from relay A")
        .await?;
    bob.send_message("Conversation with alice", "hello from relay B")
        .await?;
    let expected = vec![
        ("alice".to_string(), "hello from relay A".to_string()),
        ("bob".to_string(), "hello from relay B".to_string()),
    ];
    for (browser, title) in [
        (&alice, "Conversation with bob"),
        (&bob, "Conversation with alice"),
    ] {
        let seen = browser
            .eventually(Duration::from_secs(10), "both messages", || async {
                let seen = browser.messages(title).await?;
                Ok((seen.len() >= expected.len()).then_some(seen))
            })
            .await?;
        ensure!(seen == expected, "{title}: {seen:?}");
    }
    alice.close().await?;
    bob.close().await
}
