//! The MLP activation (`mlp.act` in transformers), one scalar function per entry of
//! `transformers`' ACT2FN, written out so the formula each name means is readable here.
//!
//! Activations run element-wise over f32 (reduced-precision activations are upcast first, as
//! PyTorch's CPU kernels do internally), which also makes this the plain reference for any fused
//! kernel later.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::config::{Activation, Config};
use crate::error::Result;
use crate::weights::Weights;

const SQRT_2_OVER_PI: f32 = 0.797_884_6; // sqrt(2 / pi)

/// An activation with whatever it learned (PReLU's slope, xIELU's alphas).
#[derive(Debug, Clone)]
pub struct Act {
    pub kind: Activation,
    params: ActParams,
    /// The values as stored under `mlp.act`, for listing parameters.
    raw: Vec<ActParam>,
}

/// One stored value of a parameterised activation.
#[derive(Debug, Clone, Copy)]
pub struct ActParam {
    /// The state_dict name under `mlp.act` (`weight`, `alpha_p`, `beta`, ...).
    pub name: &'static str,
    pub value: f32,
    /// Learned (an nn.Parameter, shape `[1]`) or a buffer (a 0-d tensor, not counted as a parameter).
    pub learned: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct ActParams {
    /// PReLU slope.
    slope: f32,
    /// xIELU, already passed through softplus the way its forward does.
    alpha_p: f32,
    alpha_n: f32,
    beta: f32,
    eps: f32,
}

impl Act {
    /// An activation without parameters (for the parameterised ones, their transformers defaults).
    pub fn new(kind: Activation) -> Act {
        let params = match kind {
            Activation::Prelu => ActParams {
                slope: 0.25,
                ..ActParams::default()
            },
            Activation::Xielu => xielu_params(
                (0.8f32.exp_m1()).ln(),
                ((0.8f32 - 0.5).exp_m1()).ln(),
                0.5,
                -1e-6,
                DType::BF16,
            ),
            _ => ActParams::default(),
        };
        Act {
            kind,
            params,
            raw: Vec::new(),
        }
    }

    /// Load `{prefix}.act.*` where the activation has parameters.
    pub fn load(weights: &Weights, prefix: &str, config: &Config) -> Result<Act> {
        let kind = config
            .activation()
            .expect("Config::validate rejects unknown activations");
        let scalar = |name: &str| -> Result<(f32, DType)> {
            let full = format!("{prefix}.{name}");
            let dtype = weights.stored_dtype(&full).unwrap_or(DType::F32);
            let shape = weights.shape(&full).unwrap_or_default();
            let t = weights.get(&full, &shape, DType::F32, &Device::Cpu)?;
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            Ok((v.first().copied().unwrap_or(0.0), dtype))
        };
        let (params, raw) = match kind {
            Activation::Prelu => {
                let slope = scalar("weight")?.0;
                let params = ActParams {
                    slope,
                    ..ActParams::default()
                };
                (params, vec![param("weight", slope, true)])
            }
            Activation::Xielu => {
                let (alpha_p, dtype) = scalar("alpha_p")?;
                let (alpha_n, _) = scalar("alpha_n")?;
                let (beta, _) = scalar("beta")?;
                let (eps, _) = scalar("eps")?;
                let raw = vec![
                    param("alpha_p", alpha_p, true),
                    param("alpha_n", alpha_n, true),
                    param("beta", beta, false),
                    param("eps", eps, false),
                ];
                (xielu_params(alpha_p, alpha_n, beta, eps, dtype), raw)
            }
            _ => (ActParams::default(), Vec::new()),
        };
        Ok(Act { kind, params, raw })
    }

    /// The stored values under `mlp.act`, in state_dict order (empty for most activations).
    pub fn parameters(&self) -> &[ActParam] {
        &self.raw
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let shape = x.shape().clone();
        let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        // Element-wise and independent: split across cores in cache-sized chunks.
        v.par_chunks_mut(16 * 1024)
            .for_each(|chunk| self.apply_in_place(chunk));
        Ok(Tensor::from_vec(v, shape, x.device())?.to_dtype(dtype)?)
    }

    /// The activation of every value, in place.
    pub fn apply_in_place(&self, xs: &mut [f32]) {
        // GPT-2's own activation as a loop of its own, which vectorises (exp_fast is plain
        // arithmetic); the others one value at a time.
        if let Activation::GeluNew
        | Activation::GeluPytorchTanh
        | Activation::GeluAccurate
        | Activation::GeluPythonTanh = self.kind
        {
            gelu_tanh_slice(xs);
            return;
        }
        for e in xs.iter_mut() {
            *e = apply(self.kind, &self.params, *e);
        }
    }

    /// The activation of one value (the reference for fused kernels).
    pub fn scalar(&self, x: f32) -> f32 {
        apply(self.kind, &self.params, x)
    }
}

fn param(name: &'static str, value: f32, learned: bool) -> ActParam {
    ActParam {
        name,
        value,
        learned,
    }
}

/// xIELU's forward computes `softplus(alpha)` in the parameters' dtype (bf16 by default), so the
/// rounding to that dtype is part of the function.
fn xielu_params(alpha_p: f32, alpha_n: f32, beta: f32, eps: f32, dtype: DType) -> ActParams {
    let round = |v: f32| match dtype {
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    };
    ActParams {
        slope: 0.0,
        alpha_p: round(softplus(alpha_p)),
        alpha_n: round(beta + round(softplus(alpha_n))),
        beta,
        eps,
    }
}

/// PyTorch's softplus (beta 1, threshold 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        libm::log1pf(x.exp())
    }
}

fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2))
}

/// The tanh approximation as transformers writes it (the reference for [`gelu_tanh_fast`]).
#[cfg(test)]
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// The same function through `0.5 (1 + tanh u) = 1 / (1 + exp(-2u))`: one `exp` instead of
/// `tanh` (which costs an `expm1` and more), and no cancellation for negative x; the exp is
/// the vectorisable one attention's softmax uses.
#[inline(always)]
fn gelu_tanh_fast(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    x / (1.0 + super::attention::exp_fast(-2.0 * u))
}

/// [`gelu_tanh_fast`] over a slice.
fn gelu_tanh_slice(xs: &mut [f32]) {
    super::matvec::with_simd(
        #[inline(always)]
        || xs.iter_mut().for_each(|e| *e = gelu_tanh_fast(*e)),
    )
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn apply(kind: Activation, p: &ActParams, x: f32) -> f32 {
    use Activation::*;
    match kind {
        Gelu | GeluPython => gelu_erf(x),
        GeluNew | GeluPytorchTanh | GeluAccurate | GeluPythonTanh => gelu_tanh_fast(x),
        GeluFast => 0.5 * x * (1.0 + (x * 0.797_884_6 * (1.0 + 0.044715 * x * x)).tanh()),
        Gelu10 => gelu_erf(x).clamp(-10.0, 10.0),
        QuickGelu => x * sigmoid(1.702 * x),
        Laplace => {
            // transformers' constants (mu is rounded 1/sqrt 2, on purpose: use theirs).
            #[allow(clippy::approx_constant)]
            let mu = 0.707_107f32;
            let sigma = 0.282_095f32;
            0.5 * (1.0 + libm::erff((x - mu) / (sigma * std::f32::consts::SQRT_2)))
        }
        LeakyRelu => {
            if x >= 0.0 {
                x
            } else {
                0.01 * x
            }
        }
        Linear => x,
        Mish => x * softplus(x).tanh(),
        Relu => x.max(0.0),
        Relu2 => {
            let r = x.max(0.0);
            r * r
        }
        Relu6 => x.clamp(0.0, 6.0),
        Sigmoid => sigmoid(x),
        Silu | Swish => x * sigmoid(x),
        Tanh => x.tanh(),
        Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        SqrtSoftplus => softplus(x).sqrt(),
        Prelu => {
            if x >= 0.0 {
                x
            } else {
                p.slope * x
            }
        }
        Xielu => {
            if x > 0.0 {
                p.alpha_p * x * x + p.beta * x
            } else {
                (libm::expm1f(x.min(p.eps)) - x) * p.alpha_n + p.beta * x
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_gelu_matches_the_tanh_formula() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20] in steps of 1e-4
            let (fast, reference) = (gelu_tanh_fast(x), gelu_tanh(x));
            let err = (fast - reference).abs() / x.abs().max(1.0);
            worst = worst.max(err);
        }
        assert!(
            worst < 5e-7,
            "fast GELU differs from the tanh formula by {worst:e}"
        );
        assert_eq!(gelu_tanh_fast(-100.0), 0.0);
        assert_eq!(gelu_tanh_fast(100.0), 100.0);
    }
}
