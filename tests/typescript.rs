//! The examples' browser side, generated from their Rust types (the chat's
//! `ChatEvent`, the llm's `Completion`): each committed module must be what
//! the types generate, each page must compile under `tsc --strict` into the
//! committed `js/`, and a wrong event name or field must be a TypeScript
//! error. `UPDATE_TYPESCRIPT=1 cargo test -p sse-tests --test typescript`
//! rewrites the generated and compiled files.

use std::path::{Path, PathBuf};
use std::process::Command;

use sse_tests::external::{require, tsc_path};

fn chat_static() -> PathBuf {
    example_static("chat")
}

fn example_static(example: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{example}/static"))
}

/// Each example's page: its generated module (file and text) and the
/// scripts `tsc` makes of it and the page.
fn pages() -> [(&'static str, &'static str, String, [&'static str; 2]); 2] {
    [
        (
            "chat",
            "chat-events.ts",
            chat::typescript_module(),
            ["chat.js", "chat-events.js"],
        ),
        (
            "llm",
            "completion-events.ts",
            llm::typescript_module(),
            ["llm.js", "completion-events.js"],
        ),
    ]
}

fn updating() -> bool {
    std::env::var_os("UPDATE_TYPESCRIPT").is_some()
}

fn tsc(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("node")
        .arg(tsc_path())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run node")
}

fn have_tsc() -> bool {
    require(&[("typescript (tsc)", tsc_path().exists())]).is_ok()
}

#[test]
fn each_committed_module_is_what_the_rust_types_generate() {
    for (example, module, generated, _) in pages() {
        let path = example_static(example).join(module);
        if updating() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "examples/{example}/static/{module} is stale: the Rust types changed. \
             Rewrite it with `UPDATE_TYPESCRIPT=1 cargo test -p sse-tests --test typescript`."
        );
    }
}

#[test]
fn each_page_compiles_under_strict_typescript_into_the_committed_js() {
    if !have_tsc() {
        return;
    }
    for (example, _, _, scripts) in pages() {
        let out = tempdir(&format!("tsc-out-{example}"));
        let compiled = tsc(
            &["-p", "tsconfig.json", "--outDir", out.to_str().unwrap()],
            &example_static(example),
        );
        assert!(
            compiled.status.success(),
            "{example}: tsc --strict failed:\n{}",
            String::from_utf8_lossy(&compiled.stdout)
        );
        for file in scripts {
            let fresh = std::fs::read_to_string(out.join(file)).unwrap();
            let committed_path = example_static(example).join("js").join(file);
            if updating() {
                std::fs::create_dir_all(committed_path.parent().unwrap()).unwrap();
                std::fs::write(&committed_path, &fresh).unwrap();
            }
            let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
            assert!(
                committed == fresh,
                "examples/{example}/static/js/{file} is not what tsc makes of the sources; \
                 rewrite it with `UPDATE_TYPESCRIPT=1 cargo test -p sse-tests --test typescript`"
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn a_wrong_event_name_or_field_is_a_typescript_error() {
    if !have_tsc() {
        return;
    }
    let check = |dir: &Path, file: &str| {
        tsc(
            &[
                "--noEmit",
                "--strict",
                "--target",
                "ES2020",
                "--module",
                "ES2020",
                "--moduleResolution",
                "bundler",
                "--lib",
                "ES2020,DOM",
                file,
            ],
            dir,
        )
    };
    // Every `@ts-expect-error` line is an error, or tsc fails on the directive.
    let checked = check(&chat_static(), "type-tests.ts");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    // Control: without its directive, the wrong event name is reported.
    let dir = tempdir("tsc-control");
    std::fs::copy(
        chat_static().join("chat-events.ts"),
        dir.join("chat-events.ts"),
    )
    .unwrap();
    let tests = std::fs::read_to_string(chat_static().join("type-tests.ts")).unwrap();
    let without = tests.replacen("// @ts-expect-error: there is no `sayd` event.\n", "", 1);
    assert_ne!(without, tests, "the control removes one directive");
    std::fs::write(dir.join("type-tests.ts"), without).unwrap();
    let control = check(&dir, "type-tests.ts");
    let output = String::from_utf8_lossy(&control.stdout);
    assert!(!control.status.success(), "tsc accepted a wrong event name");
    assert!(output.contains("\"sayd\""), "{output}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
