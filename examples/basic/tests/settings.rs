//! Settings that would overflow are refused when the app starts, with a
//! message that names them, instead of a panic at the first login.

use std::time::Duration;

#[tokio::test]
async fn a_token_lifetime_past_a_year_is_refused_at_start() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_basic"))
        .env("TOKEN_TTL_SECS", u64::MAX.to_string())
        .env("PORT", "0")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the binary exits by itself")
        .expect("the binary runs");
    assert!(!output.status.success(), "it started: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TOKEN_TTL_SECS"), "{stderr}");
}
