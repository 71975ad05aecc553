//! Weight-streaming rate of the decode kernels (matvec.rs) on GPT-2 (124M) shapes:
//! `cargo run --release -p gpt2 --example matvec_bench`. Prints GB/s of weights read; compare
//! with the machine's memory bandwidth (a decode step is bound by it).

use std::time::Instant;

use candle_core::{Device, Tensor};
use gpt2::model::matvec;

fn main() -> candle_core::Result<()> {
    // As the gpt2 command does: this thread works in the pool instead of waiting on it.
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .expect("thread pool");
    let dev = Device::Cpu;
    // Twelve layers' four products (340 MB: beyond any cache) and the tied lm_head, as in gpt2.
    let shapes = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];
    let ws: Vec<(Tensor, Tensor)> = (0..12)
        .flat_map(|_| shapes.iter())
        .map(|&(k, n)| {
            let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?; // [out, in], as Conv1D keeps it
            let b = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
            Ok((w, b))
        })
        .collect::<candle_core::Result<_>>()?;
    let wte = Tensor::randn(0f32, 0.02, (50257, 768), &dev)?;
    for m in [1usize, 4, 8] {
        let xs: Vec<Tensor> = shapes
            .iter()
            .map(|&(k, _)| Tensor::randn(0f32, 1.0, (m, k), &dev))
            .collect::<candle_core::Result<_>>()?;
        let h = Tensor::randn(0f32, 1.0, (m, 768), &dev)?;
        let reps = 10;
        let t0 = Instant::now();
        for _ in 0..reps {
            for ((w, b), x) in ws.iter().zip(xs.iter().cycle()) {
                matvec::linear(x, w, Some(b)).unwrap().unwrap();
            }
        }
        let t_lin = t0.elapsed().as_secs_f64() / reps as f64;
        let bytes: usize = 12 * shapes.iter().map(|(k, n)| k * n * 4).sum::<usize>();
        let t0 = Instant::now();
        for _ in 0..10 {
            matvec::linear(&h, &wte, None).unwrap().unwrap();
        }
        let t_log = t0.elapsed().as_secs_f64() / 10.0;
        println!(
            "m={m}: 12 layers' products {:.3} ms ({:.1} GB/s); lm_head {:.3} ms ({:.1} GB/s); together {:.2} ms",
            t_lin * 1e3,
            bytes as f64 / t_lin / 1e9,
            t_log * 1e3,
            (50257 * 768 * 4) as f64 / t_log / 1e9,
            (t_lin + t_log) * 1e3
        );
    }
    Ok(())
}
