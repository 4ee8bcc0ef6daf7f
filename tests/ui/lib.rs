//! Nothing: the crate exists for its `ui` test (see `ui.rs`).
