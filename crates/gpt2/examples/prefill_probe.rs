//! Prefill time at a few lengths: `cargo run --release -p gpt2 --example prefill_probe -- DIR [N...]`
//! (`GPT2_FORMAT=q8` and the like for another weight format).

use candle_core::{Device, Tensor};
use gpt2::model::{Cache, ForwardArgs, WeightFormat};
use gpt2::{LoadOptions, Pretrained};
use std::time::Instant;
/// VmHWM in MB (0 where /proc does not say).
fn peak_rss_mb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1000)
}

fn main() -> gpt2::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .unwrap();
    let format = WeightFormat::from_name(&std::env::var("GPT2_FORMAT").unwrap_or("f32".into()))?;
    let p = Pretrained::load(
        &std::env::args().nth(1).unwrap(),
        &LoadOptions::for_format(format),
    )?;
    println!("loaded: peak RSS {} MB", peak_rss_mb());
    // Lengths to time: the arguments after the model, else a spread around the fused path's
    // cut-over (matvec::MAX_ROWS).
    let lengths: Vec<usize> = std::env::args()
        .skip(2)
        .map(|a| a.parse().expect("a length"))
        .collect();
    let lengths = if lengths.is_empty() {
        vec![1, 2, 4, 8, 9, 16, 32, 64]
    } else {
        lengths
    };
    for n in lengths {
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 17 + 3) % 50257).collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut cache = Cache::new(p.config.n_layer);
            let t0 = Instant::now();
            p.model.forward(
                &ForwardArgs {
                    logits_to_keep: 1,
                    ..ForwardArgs::ids(&ids)
                },
                Some(&mut cache),
            )?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "prefill {n:>3} (logits of the last): {:.1} ms, peak RSS so far {} MB",
            best * 1e3,
            peak_rss_mb()
        );
    }
    Ok(())
}
