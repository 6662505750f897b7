//! Protocol conformance: the Autobahn WebSocket cases 1–10, run by kosoku
//! (PyPI, installed by `cargo xtask setup`), against the relay's transport
//! in echo mode (`relay::conformance`). Fails, never skips, without kosoku.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::net::TcpListener;

/// SPEC L7: 0 FAILED and 0 UNCLEAN over the Autobahn cases 1–10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_1_to_10_pass() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        warp::serve(relay::conformance::echo())
            .incoming(listener)
            .run(),
    );

    let reports = std::env::temp_dir().join(format!("chat-autobahn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&reports);
    let started = Instant::now();
    let mut kosoku = tokio::process::Command::new("kosoku");
    kosoku
        .args(["-m", "fuzzingclient", "-p", "2", "-o"])
        .arg(&reports);
    // Autobahn numbers its groups 1–7, 9, 10 (there is no group 8).
    for group in [1, 2, 3, 4, 5, 6, 7, 9, 10] {
        kosoku.args(["-i", &format!("{group}.*")]);
    }
    let status = kosoku
        .arg(addr.to_string())
        .status()
        .await
        .expect("kosoku is missing: run `cargo xtask setup` (pip install kosoku)");
    assert!(status.success(), "kosoku failed: {status}");
    let took = started.elapsed();

    let index = std::fs::read_to_string(reports.join("index.json")).expect("kosoku's index.json");
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (_, cases) in index.as_object().expect("an object of agents") {
        for (case, result) in cases.as_object().expect("an object of cases") {
            for key in ["behavior", "behaviorClose"] {
                let verdict = result[key].as_str().unwrap_or("?").to_string();
                if verdict == "FAILED" || verdict == "UNCLEAN" || verdict == "?" {
                    bad.push(format!("{case} {key} {verdict}"));
                }
                if key == "behavior" {
                    *tally.entry(verdict).or_default() += 1;
                }
            }
        }
    }
    println!("figure: Autobahn 1-10 in {took:?}: {tally:?}");
    server.abort();
    let _ = std::fs::remove_dir_all(&reports);
    assert!(bad.is_empty(), "{} cases not passed: {bad:?}", bad.len());
}
