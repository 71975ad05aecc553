//! Where a decode step's time goes: the whole fused step against the same weights streamed by
//! the product kernels alone. `cargo run --release -p gpt2 --example step_bench -- DIR`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use gpt2::model::{Cache, ForwardArgs, WeightFormat};
use gpt2::{LoadOptions, Pretrained};

fn main() -> gpt2::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .expect("thread pool");
    let dir = std::env::args().nth(1).expect("a model directory");
    let format = WeightFormat::from_name(&std::env::args().nth(2).unwrap_or("f32".into()))?;
    let opts = LoadOptions::for_format(format);
    let p = Pretrained::load(&dir, &opts)?;
    let m = &p.model;
    let dev = Device::Cpu;
    for _ in 0..3 {
        let mut cache = Cache::new(m.config().n_layer);
        let ids = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &dev)?;
        m.forward(
            &ForwardArgs {
                logits_to_keep: 1,
                ..ForwardArgs::ids(&ids)
            },
            Some(&mut cache),
        )?;
        let steps = 64;
        let t0 = Instant::now();
        for s in 0..steps {
            let ids = Tensor::new(&[[(s * 7 % 50000) as u32]], &dev)?;
            m.forward(&ForwardArgs::ids(&ids), Some(&mut cache))?;
        }
        let step = t0.elapsed().as_secs_f64() / steps as f64;
        // The products alone, over the same tensors.
        let t0 = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..steps {
            for b in &m.transformer.h {
                for c in [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj] {
                    let w = c.weight_out_in();
                    let (_, k) = w.dims();
                    let x = Tensor::zeros((1, k), DType::F32, &dev)?;
                    w.linear(&x, Some(&c.bias))?;
                    bytes += w.bytes();
                }
            }
            let x = Tensor::zeros((1, m.config().n_embd), DType::F32, &dev)?;
            m.lm_head.linear(&x, None)?;
            bytes += m.lm_head.bytes();
        }
        let kern = t0.elapsed().as_secs_f64() / steps as f64;
        println!(
            "step {:.2} ms ({:.1} tok/s); products alone {:.2} ms ({:.1} GB/s); rest {:.2} ms",
            step * 1e3,
            1.0 / step,
            kern * 1e3,
            bytes as f64 / steps as f64 / kern / 1e9,
            (step - kern) * 1e3
        );
    }
    Ok(())
}
