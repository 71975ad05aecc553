//! Where a load's time and peak memory go, one format per run:
//! `cargo run --release -p gpt2 --example load_probe -- DIR [format] [runs]`.
//! Peak RSS is reset before each load (/proc/self/clear_refs), so each line is that load's own.

use std::time::Instant;

use gpt2::model::WeightFormat;
use gpt2::{LoadOptions, Pretrained};

fn status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
        / 1024
}

fn main() -> gpt2::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("a model directory");
    let format = WeightFormat::from_name(&args.next().unwrap_or("f32".into()))?;
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("runs"));
    let opts = LoadOptions::for_format(format);
    println!("start: rss {} MB", status("VmRSS:"));
    for _ in 0..runs {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = status("VmRSS:");
        let t0 = Instant::now();
        let p = Pretrained::load(&dir, &opts)?;
        let s = t0.elapsed().as_secs_f64();
        let weights = p.model.weight_bytes() as u64 / (1 << 20);
        println!(
            "{}: {s:.3} s, weights {weights} MB, rss before {base} MB, after {} MB, peak {} MB ({:.2}x weights)",
            format.name(),
            status("VmRSS:"),
            status("VmHWM:"),
            status("VmHWM:") as f64 / weights as f64
        );
        drop(p);
    }
    Ok(())
}
