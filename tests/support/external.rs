//! Running programs we did not write (Chromium through Node, Python clients).
//! Under `CI=true` a missing program fails the test; elsewhere the test is
//! skipped with the reason printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `tests/` directory.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `Ok(())` when every requirement holds. Otherwise panics under `CI=true`,
/// or returns the reason to skip.
pub fn require(requirements: &[(&str, bool)]) -> Result<(), String> {
    let missing: Vec<&str> = requirements
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let reason = format!(
        "missing: {} (bash .ci/run installs them)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    Err(reason)
}

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

pub fn has_playwright() -> bool {
    tests_dir()
        .join("browser/node_modules/playwright-core/package.json")
        .exists()
}

/// TypeScript's compiler, installed by `npm ci --prefix tests/browser`.
pub fn tsc_path() -> PathBuf {
    tests_dir().join("browser/node_modules/typescript/bin/tsc")
}

/// Runs `program args` in a blocking thread, bounded by `limit`; returns stdout.
pub async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    limit: Duration,
) -> String {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} took longer than {limit:?}"))
        .unwrap_or_else(|e| panic!("could not start {program}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stderr}"
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}
