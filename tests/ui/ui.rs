//! Compile-time guarantees of the macros, with trybuild. Each `fail` case holds
//! one mistake and its `.stderr` snapshot: the exact error, span and hint the
//! user sees. Snapshots are recorded with the workspace's toolchain (Rust 1.95).

#[test]
fn macros_accept_every_supported_form_and_reject_each_mistake_with_a_hint() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
