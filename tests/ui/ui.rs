//! Compile-time guarantees of the macros, with trybuild. Each `fail` case holds
//! one mistake and its `.stderr` snapshot: the exact error, span and hint the
//! user sees. Snapshots are recorded with the workspace's toolchain (Rust 1.95)
//! and this crate's dependencies, which are what the cases can name (a list
//! of "other types that implement" a trait depends on them).

#[test]
fn macros_accept_every_supported_form_and_reject_each_mistake_with_a_hint() {
    let cases = trybuild::TestCases::new();
    cases.pass("pass/*.rs");
    cases.compile_fail("fail/*.rs");
}
