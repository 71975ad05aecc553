//! What every CLI test needs: the fixtures, and the binary run as a user runs it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

/// The `gpt2` binary with these arguments, offline.
pub fn gpt2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run gpt2")
}

/// Its stdout, after checking it succeeded.
pub fn ok(args: &[&str]) -> String {
    let out = gpt2(args);
    assert!(
        out.status.success(),
        "gpt2 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Its stderr, after checking it failed with a plain `error: ...` message and no panic.
pub fn fails(args: &[&str]) -> String {
    let out = gpt2(args);
    assert!(!out.status.success(), "gpt2 {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.starts_with("error: "),
        "plain error message, got {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A fresh directory per test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
