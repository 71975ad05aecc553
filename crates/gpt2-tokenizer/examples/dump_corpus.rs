//! Writes the exactness corpus (or English-only text for benchmarks) as JSON lines, one string per
//! document, for scripts/tokenizer_goldens.py and scripts/tokenizer_bench.py.
//!
//! cargo run --release -p gpt2-tokenizer --example dump_corpus -- corpus.jsonl [--english MB]

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::io::Write;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: dump_corpus OUT.jsonl [--english MB]");
        std::process::exit(2);
    };
    let docs = match args.get(1).map(String::as_str) {
        Some("--english") => {
            let mb: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10.0);
            corpus::english((mb * 1e6) as usize)
        }
        _ => corpus::corpus(),
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for d in &docs {
        serde_json::to_writer(&mut w, d)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let bytes: usize = docs.iter().map(String::len).sum();
    eprintln!(
        "wrote {} documents, {bytes} bytes, corpus version {}",
        docs.len(),
        corpus::CORPUS_VERSION
    );
    Ok(())
}
