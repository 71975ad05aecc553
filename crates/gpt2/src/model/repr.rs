//! The module tree as PyTorch prints `GPT2LMHeadModel` (`print(model)`), so users can compare
//! the two side by side.

use crate::config::{Activation, Config};

use super::gpt2::Gpt2LmHeadModel;

/// Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 or from 1e16.
pub fn python_float(v: f64) -> String {
    if v == 0.0 {
        return "0.0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..16).contains(&exp) {
        // Rust's `{:e}` gives the shortest digits as "1e-5"; Python writes "1e-05".
        let s = format!("{v:e}");
        let (mantissa, e) = s.split_once('e').expect("{:e} has an exponent");
        let e: i32 = e.parse().expect("integer exponent");
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

fn act_repr(a: Activation) -> &'static str {
    use Activation::*;
    match a {
        Gelu | GeluPython => "GELUActivation()",
        Gelu10 => "ClippedGELUActivation()",
        GeluAccurate => "AccurateGELUActivation()",
        GeluFast => "FastGELUActivation()",
        GeluNew => "NewGELUActivation()",
        GeluPythonTanh | GeluPytorchTanh => "GELUTanh()",
        Hardswish => "Hardswish()",
        Laplace => "LaplaceActivation()",
        LeakyRelu => "LeakyReLU(negative_slope=0.01)",
        Linear => "LinearActivation()",
        Mish => "MishActivation()",
        Prelu => "PReLU(num_parameters=1)",
        QuickGelu => "QuickGELUActivation()",
        Relu => "ReLU()",
        Relu2 => "ReLUSquaredActivation()",
        Relu6 => "ReLU6()",
        Sigmoid => "Sigmoid()",
        Silu => "SiLUActivation()",
        SqrtSoftplus => "SqrtSoftplusActivation()",
        Swish => "SiLU()",
        Tanh => "Tanh()",
        Xielu => "XIELUActivation()",
    }
}

/// `print(GPT2LMHeadModel)`.
pub fn module_tree(model: &Gpt2LmHeadModel) -> String {
    let c: &Config = model.config();
    let e = c.n_embd;
    let inner = c.inner_dim();
    let ln = |n: usize| {
        format!(
            "LayerNorm(({n},), eps={}, elementwise_affine=True, bias=True)",
            python_float(c.layer_norm_epsilon)
        )
    };
    let drop = |p: f64| format!("Dropout(p={}, inplace=False)", python_float(p));
    let blocks = match c.n_layer {
        1 => "(0): GPT2Block(".to_string(),
        n => format!("(0-{}): {n} x GPT2Block(", n - 1),
    };
    let act = act_repr(c.activation().expect("validated config"));
    let lines = [
        "GPT2LMHeadModel(".to_string(),
        "  (transformer): GPT2Model(".into(),
        format!("    (wte): Embedding({}, {e})", c.vocab_size),
        format!("    (wpe): Embedding({}, {e})", c.n_positions),
        format!("    (drop): {}", drop(c.embd_pdrop)),
        "    (h): ModuleList(".into(),
        format!("      {blocks}"),
        format!("        (ln_1): {}", ln(e)),
        "        (attn): GPT2Attention(".into(),
        format!("          (c_attn): Conv1D(nf={}, nx={e})", 3 * e),
        format!("          (c_proj): Conv1D(nf={e}, nx={e})"),
        format!("          (attn_dropout): {}", drop(c.attn_pdrop)),
        format!("          (resid_dropout): {}", drop(c.resid_pdrop)),
        "        )".into(),
        format!("        (ln_2): {}", ln(e)),
        "        (mlp): GPT2MLP(".into(),
        format!("          (c_fc): Conv1D(nf={inner}, nx={e})"),
        format!("          (c_proj): Conv1D(nf={e}, nx={inner})"),
        format!("          (act): {act}"),
        format!("          (dropout): {}", drop(c.resid_pdrop)),
        "        )".into(),
        "      )".into(),
        "    )".into(),
        format!("    (ln_f): {}", ln(e)),
        "  )".into(),
        format!(
            "  (lm_head): Linear(in_features={e}, out_features={}, bias=False)",
            c.vocab_size
        ),
        ")".into(),
    ];
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::python_float;

    #[test]
    fn floats_print_like_python() {
        for (v, s) in [
            (1e-5, "1e-05"),
            (0.001, "0.001"),
            (0.1, "0.1"),
            (0.0, "0.0"),
            (1.0, "1.0"),
            (1e-12, "1e-12"),
            (2.5e-6, "2.5e-06"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
        ] {
            assert_eq!(python_float(v), s);
        }
    }
}
