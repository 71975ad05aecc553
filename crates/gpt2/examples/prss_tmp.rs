use candle_core::{Device, Tensor};
use gpt2::model::{Cache, ForwardArgs, WeightFormat};
use gpt2::{LoadOptions, Pretrained};
fn st(k: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(k))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}
fn main() {
    let format = WeightFormat::from_name(&std::env::args().nth(2).unwrap()).unwrap();
    println!("start rss {} kB", st("VmRSS:"));
    let p = Pretrained::load(
        &std::env::args().nth(1).unwrap(),
        &LoadOptions::for_format(format),
    )
    .unwrap();
    println!(
        "after load rss {} kB (anon {}, file {}), weights {} kB",
        st("VmRSS:"),
        st("RssAnon:"),
        st("RssFile:"),
        p.model.transformer.weight_bytes() / 1024
    );
    for n in [512usize, 512] {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = st("VmRSS:");
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 17 + 3) % 50257).collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut cache = Cache::new(12);
        p.model
            .forward(
                &ForwardArgs {
                    logits_to_keep: 1,
                    ..ForwardArgs::ids(&ids)
                },
                Some(&mut cache),
            )
            .unwrap();
        println!(
            "prefill {n}: rss before {base} kB, peak {} kB (+{}), kv {} kB, after {} kB",
            st("VmHWM:"),
            st("VmHWM:") - base,
            cache.bytes() / 1024,
            st("VmRSS:")
        );
    }
}
