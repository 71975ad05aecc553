//! A tokenizer's load time and memory: `cargo run --release -p gpt2-tokenizer --example
//! tokenizer_load_probe -- [DIR]` (the built-in GPT-2 vocabulary without DIR, else DIR's files).
//! Resident memory is read from /proc (0 where there is none).

use std::time::Instant;

use gpt2_tokenizer::Tokenizer;

/// A /proc/self/status figure in kB.
fn status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() -> gpt2_tokenizer::Result<()> {
    let dir = std::env::args().nth(1);
    let before = status("VmRSS:");
    let t0 = Instant::now();
    // The first Tokenizer::gpt2() of a process parses the built-in files (later ones clone).
    let tok = match &dir {
        Some(dir) => Tokenizer::from_dir(dir)?,
        None => Tokenizer::gpt2(),
    };
    let took = t0.elapsed();
    println!(
        "{}: {} tokens, built in {:.1} ms; resident {} kB before, {} kB after, peak {} kB",
        dir.as_deref().unwrap_or("built-in GPT-2"),
        tok.vocab_size(),
        took.as_secs_f64() * 1e3,
        before,
        status("VmRSS:"),
        status("VmHWM:"),
    );
    Ok(())
}
