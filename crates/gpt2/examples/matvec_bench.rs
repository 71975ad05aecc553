//! Weight-streaming rate of the decode kernels on GPT-2 (124M) shapes, in every weight format:
//! `cargo run --release -p gpt2 --example matvec_bench`. Prints the GB/s of weights read and
//! the machine's plain read bandwidth (a decode step is bound by it). Formats may be named
//! (`-- q8 q4`); GPT2_SIMD=avx2|portable runs a lesser instruction set for comparison;
//! ROWS=1,8,512 picks the input rows (default 1,4,8; a prompt's products at 512).

use std::time::Instant;

use candle_core::{Device, Tensor};
use gpt2::model::matvec::read_bandwidth;
use gpt2::model::{Weight, WeightFormat};

fn main() -> gpt2::Result<()> {
    // As the gpt2 command does: this thread works in the pool instead of waiting on it.
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .expect("thread pool");
    let dev = Device::Cpu;
    // Twelve layers' four products (beyond any cache) and the tied lm_head, as in gpt2.
    let shapes = [
        (2304, 768),
        (768, 768),
        (3072, 768),
        (768, 3072),
        (50257, 768),
    ];
    let f32s: Vec<Tensor> = (0..12)
        .flat_map(|_| shapes[..4].iter())
        .chain(std::iter::once(&shapes[4]))
        .map(|&s| Ok(Tensor::randn(0f32, 0.02, s, &dev)?))
        .collect::<gpt2::Result<_>>()?;
    println!(
        "plain read loop: {:.1} GB/s",
        read_bandwidth(512 << 20) / 1e9
    );
    let named: Vec<String> = std::env::args().skip(1).collect();
    for format in WeightFormat::ALL {
        if !named.is_empty() && !named.iter().any(|n| n == format.name()) {
            continue;
        }
        let ws: Vec<Weight> = f32s
            .iter()
            .map(|t| Weight::from_tensor(t.clone(), format))
            .collect::<gpt2::Result<_>>()?;
        let bytes: usize = ws.iter().map(Weight::bytes).sum();
        let rows = std::env::var("ROWS").unwrap_or("1,4,8".into());
        for m in rows
            .split(',')
            .map(|r| r.trim().parse::<usize>().expect("ROWS: numbers"))
        {
            let xs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.5f32; m * w.dims().1]).collect();
            let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.dims().0]).collect();
            let macs: usize = ws.iter().map(|w| m * w.dims().0 * w.dims().1).sum();
            let mut best = f64::MAX;
            for _ in 0..15 {
                let t0 = Instant::now();
                for ((w, x), y) in ws.iter().zip(&xs).zip(ys.iter_mut()) {
                    w.linear_into(x, m, None, y)?;
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "{:>4} m={m}: {:.2} ms per step ({:.0} MB, {:.1} GB/s, {:.1} steps/s, {:.0} G MAC/s)",
                format.name(),
                best * 1e3,
                bytes as f64 / 1e6,
                bytes as f64 / best / 1e9,
                1.0 / best,
                macs as f64 / best / 1e9
            );
        }
    }
    Ok(())
}
