//! Encoding throughput, single-threaded and batched across cores (not a test: no assertions on
//! time). scripts/tokenizer_bench.py runs it beside tiktoken and HF tokenizers on the same files.
//!
//! cargo bench -p gpt2-tokenizer --bench encode -- [FILE.jsonl ...]
//!
//! Each FILE holds one JSON string per line (one document). With no FILE it benchmarks the
//! generated English and mixed corpora of the exactness test. Prints one JSON object per corpus.

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::time::{Duration, Instant};

use gpt2_tokenizer::Tokenizer;

/// Best of several runs of at least `min` each, in MB/s.
fn measure(bytes: usize, min: Duration, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut tokens = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut runs = 0;
        while start.elapsed() < min || runs == 0 {
            tokens = f();
            runs += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / runs as f64);
    }
    (bytes as f64 / best / 1e6, tokens)
}

fn bench(name: &str, docs: &[String]) {
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    let tok = Tokenizer::gpt2();
    let min = Duration::from_millis(300);
    // `encode` splits out <|endoftext|> as HF tokenizers always does; `encode_ordinary` (tiktoken's
    // counterpart) skips that scan.
    let (single, tokens) = measure(bytes, min, || {
        refs.iter().map(|d| tok.encode(d).len()).sum()
    });
    let (batch, _) = measure(bytes, min, || {
        tok.encode_batch(&refs).iter().map(Vec::len).sum()
    });
    let (ordinary, _) = measure(bytes, min, || {
        refs.iter().map(|d| tok.encode_ordinary(d).len()).sum()
    });
    println!(
        "{{\"corpus\": {name:?}, \"documents\": {}, \"bytes\": {bytes}, \"tokens\": {tokens}, \
         \"threads\": {}, \"single_mb_s\": {single:.2}, \"batch_mb_s\": {batch:.2}, \
         \"single_ordinary_mb_s\": {ordinary:.2}}}",
        docs.len(),
        rayon::current_num_threads(),
    );
}

fn main() {
    let start = Instant::now();
    let _ = Tokenizer::gpt2();
    eprintln!(
        "built-in GPT-2 tokenizer loaded in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if files.is_empty() {
        bench("generated-english", &corpus::english(5_000_000));
        bench("generated-mixed", &corpus::corpus());
        return;
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let docs: Vec<String> = text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect();
        bench(&f, &docs);
    }
}
