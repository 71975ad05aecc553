//! GPT2Model and GPT2LMHeadModel, mirroring `transformers`' modeling_gpt2.py module by module
//! (`wte`, `wpe`, `drop`, `h[i].{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.act,
//! mlp.c_proj}`, `ln_f`, `lm_head`), so a reader with that file open finds each piece.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use super::activation::Act;
use super::attention::split_heads;
use super::cache::Cache;
use super::matvec::with_f32;
use super::weight::{check_stored_format, Weight, WeightFormat};
use super::{ForwardArgs, ModelOutput};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// GPT-2's `Conv1D`: a linear layer that `transformers` stores `[in, out]` (transposed relative
/// to `nn.Linear`). Kept here as `[out, in]`, transposed once at load, in the weight format
/// chosen then: every output is a dot product of one contiguous weight row, which is how the
/// decode kernels stream weights (matvec.rs, quant.rs); [`Conv1D::weight`] is the `[in, out]`
/// f32 matrix `transformers` shows.
#[derive(Debug, Clone)]
pub struct Conv1D {
    weight_t: Weight, // [nf, nx]
    pub bias: Tensor, // [nf], f32
}

impl Conv1D {
    /// `weight_t` is the `[nf, nx]` weight (from `Weights::get_many`, transposed).
    fn load(w: &Weights, prefix: &str, weight_t: Weight, dev: &Device) -> Result<Self> {
        let nf = weight_t.dims().0;
        Ok(Conv1D {
            weight_t,
            bias: w.get(&format!("{prefix}.bias"), &[nf], DType::F32, dev)?,
        })
    }

    /// The weight as `transformers` has it: `[nx, nf]`, f32 (a view when stored as f32).
    pub fn weight(&self) -> Result<Tensor> {
        Ok(self.weight_t.to_f32()?.t()?)
    }

    /// The weight as kept: `[nf, nx]`, in the load's format.
    pub fn weight_out_in(&self) -> &Weight {
        &self.weight_t
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, nx) = x.dims3()?;
        let x = x.reshape((b * t, nx))?;
        let y = self.weight_t.linear(&x, Some(&self.bias))?;
        Ok(y.reshape((b, t, ()))?)
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    fn load(w: &Weights, prefix: &str, n: usize, eps: f64, dev: &Device) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get(&format!("{prefix}.weight"), &[n], DType::F32, dev)?,
            bias: w.get(&format!("{prefix}.bias"), &[n], DType::F32, dev)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Normalise in f32 whatever the weights' dtype, as PyTorch's CPU kernel accumulates.
        let dtype = x.dtype();
        let shape = x.shape().clone();
        let n = self.weight.dims1()?;
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let w = self.weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let b = self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut y = vec![0f32; xs.len()];
        let eps = self.eps as f32;
        // Rows are independent: a few dozen per task.
        y.par_chunks_mut(64 * n)
            .zip(xs.par_chunks(64 * n))
            .for_each(|(out, src)| super::fused::layer_norm_rows(src, &w, &b, eps, out));
        Ok(Tensor::from_vec(y, shape, x.device())?.to_dtype(dtype)?)
    }
}

pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if train && p > 0.0 {
        Ok(candle_nn::ops::dropout(x, p as f32)?)
    } else {
        Ok(x.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    pub(crate) n_head: usize,
    pub(crate) head_dim: usize,
    /// `head_dim ** -0.5` (if scale_attn_weights) divided by `layer_idx + 1` (if
    /// scale_attn_by_inverse_layer_idx), computed in f64 as Python does.
    pub(crate) scaling: f64,
    attn_pdrop: f64,
    resid_pdrop: f64,
}

impl Attention {
    fn load(
        w: &Weights,
        prefix: &str,
        [c_attn, c_proj]: [Weight; 2],
        cfg: &Config,
        layer_idx: usize,
        dev: &Device,
    ) -> Result<Self> {
        let mut scaling = 1.0f64;
        if cfg.scale_attn_weights {
            scaling = (cfg.head_dim() as f64).powf(-0.5);
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scaling /= (layer_idx + 1) as f64;
        }
        Ok(Attention {
            c_attn: Conv1D::load(w, &format!("{prefix}.c_attn"), c_attn, dev)?,
            c_proj: Conv1D::load(w, &format!("{prefix}.c_proj"), c_proj, dev)?,
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
            scaling,
            attn_pdrop: cfg.attn_pdrop,
            resid_pdrop: cfg.resid_pdrop,
        })
    }

    /// `x`: [B, T, E]; `mask`: additive [B, 1, T, S] (0 or dtype-min) or None when nothing is
    /// masked. Returns the output [B, T, E] and, when asked, the attention probabilities [B, H, T, S].
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<(&mut Cache, usize)>,
        want_probs: bool,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, e) = x.dims3()?;
        let (h, d) = (self.n_head, self.head_dim);
        let qkv = self.c_attn.forward(x)?; // [B, T, 3E]
        let heads = |i: usize| -> Result<Tensor> {
            if let Some(v) = with_f32(&qkv, |s| split_heads(s, (b, t, h, d), i)) {
                return Ok(Tensor::from_vec(v, (b, h, t, d), qkv.device())?);
            }
            Ok(qkv
                .narrow(2, i * e, e)?
                .reshape((b, t, h, d))?
                .transpose(1, 2)?
                .contiguous()?) // [B, H, T, D]
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };

        // Scores, mask and softmax in f32 (what reorder_and_upcast_attn asks for, and harmless
        // at f32); probabilities go back to the value dtype before the weighted sum.
        let scores = q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?
            .affine(self.scaling, 0.0)?; // [B, H, T, S]
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let probs = dropout(&probs, self.attn_pdrop, train)?;
        let y = probs.matmul(&v)?; // [B, H, T, D]
        let y = y.transpose(1, 2)?.reshape((b, t, e))?;
        let y = dropout(&self.c_proj.forward(&y)?, self.resid_pdrop, train)?;
        Ok((y, want_probs.then_some(probs)))
    }
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
    pub act: Act,
    resid_pdrop: f64,
}

impl Mlp {
    fn load(
        w: &Weights,
        prefix: &str,
        [c_fc, c_proj]: [Weight; 2],
        cfg: &Config,
        dev: &Device,
    ) -> Result<Self> {
        Ok(Mlp {
            c_fc: Conv1D::load(w, &format!("{prefix}.c_fc"), c_fc, dev)?,
            c_proj: Conv1D::load(w, &format!("{prefix}.c_proj"), c_proj, dev)?,
            act: Act::load(w, &format!("{prefix}.act"), cfg)?,
            resid_pdrop: cfg.resid_pdrop,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.act.forward(&self.c_fc.forward(x)?)?;
        dropout(&self.c_proj.forward(&x)?, self.resid_pdrop, train)
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    fn load(
        w: &Weights,
        i: usize,
        cfg: &Config,
        format: WeightFormat,
        dev: &Device,
    ) -> Result<Self> {
        let p = format!("h.{i}");
        let (e, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let ln_1 = LayerNorm::load(w, &format!("{p}.ln_1"), e, eps, dev)?;
        // Each matrix kept [out, in] (see Conv1D). Float formats: the four in one allocation.
        // Quantized: each quantized straight from the map, or a quantized checkpoint's blocks.
        let inner = cfg.inner_dim();
        let names = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
            .map(|m| format!("{p}.{m}.weight"));
        let shapes = [[e, 3 * e], [e, e], [e, inner], [inner, e]];
        let loaded = if format.quant_kind().is_some() || w.quantization().is_some() {
            let conv1d = w.quantization().is_none();
            names
                .iter()
                .zip(&shapes)
                .map(|(n, s)| Weight::load(w, n, (s[1], s[0]), conv1d, format, dev))
                .collect::<Result<Vec<_>>>()?
        } else {
            let specs: Vec<(&str, &[usize], bool)> = names
                .iter()
                .zip(&shapes)
                .map(|(n, s)| (n.as_str(), &s[..], true))
                .collect();
            w.get_many(&specs, format.load_dtype(), dev)?
                .into_iter()
                .map(|t| Weight::from_tensor(t, format))
                .collect::<Result<Vec<_>>>()?
        };
        let mut weights = loaded.into_iter();
        let mut next = || weights.next().expect("four tensors asked for");
        let (c_attn, attn_proj, c_fc, mlp_proj) = (next(), next(), next(), next());
        Ok(Block {
            ln_1,
            attn: Attention::load(w, &format!("{p}.attn"), [c_attn, attn_proj], cfg, i, dev)?,
            ln_2: LayerNorm::load(w, &format!("{p}.ln_2"), e, eps, dev)?,
            mlp: Mlp::load(w, &format!("{p}.mlp"), [c_fc, mlp_proj], cfg, dev)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<(&mut Cache, usize)>,
        want_probs: bool,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (a, probs) =
            self.attn
                .forward(&self.ln_1.forward(x)?, mask, cache, want_probs, train)?;
        let x = (x + a)?;
        let m = self.mlp.forward(&self.ln_2.forward(&x)?, train)?;
        Ok(((x + m)?, probs))
    }
}

/// The bare transformer: embeddings, blocks, final layer norm.
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    pub wte: Weight, // [vocab_size, n_embd], in the load's format (the tied lm_head reads it)
    pub wpe: Tensor, // [n_positions, n_embd], f32
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    pub config: Config,
    format: WeightFormat,
    device: Device,
}

/// What one call of the transformer produced, before any head.
pub(crate) struct BaseOutput {
    pub last_hidden_state: Tensor,
    pub hidden_states: Option<Vec<Tensor>>,
    pub attentions: Option<Vec<Tensor>>,
}

impl Gpt2Model {
    /// The weights of `w` with the big matrices in `format` (a DType means that float format;
    /// activations are f32 whatever it is).
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let format = format.into();
        crate::weights::quantized::checkpoint_quantization(w, cfg)?;
        check_stored_format(w, format)?;
        check_weights_match_config(w, cfg)?;
        let (e, dev) = (cfg.n_embd, device);
        // state_dict order, so the first mismatch reported is the first a reader would check.
        let wte = Weight::load(w, "wte.weight", (cfg.vocab_size, e), false, format, dev)?;
        let wpe = w.get("wpe.weight", &[cfg.n_positions, e], DType::F32, dev)?;
        // One layer at a time (each spreads its copies across cores): the checkpoint's pages a
        // layer was read from go back before the next is read, so a load's peak memory is
        // the weights and one layer's source, not two.
        let h = (0..cfg.n_layer)
            .map(|i| Block::load(w, i, cfg, format, dev))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt2Model {
            wte,
            wpe,
            h,
            ln_f: LayerNorm::load(w, "ln_f", e, cfg.layer_norm_epsilon, dev)?,
            config: cfg.clone(),
            format,
            device: device.clone(),
        })
    }

    /// The format the big matrices are stored in.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of every parameter held, each in the format it is kept in: the matrices, their
    /// biases, the layer norms, wte and wpe (the count behind the 497 MB for gpt2 in
    /// f32, its roofline's and memory budget's "weight bytes"; a decoding step reads all of it
    /// but the other rows of wpe).
    pub fn weight_bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let norm = |ln: &LayerNorm| tensor(&ln.weight) + tensor(&ln.bias);
        let blocks: usize = self
            .h
            .iter()
            .map(|b| {
                let convs = [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj];
                convs
                    .iter()
                    .map(|c| c.weight_t.bytes() + tensor(&c.bias))
                    .sum::<usize>()
                    + norm(&b.ln_1)
                    + norm(&b.ln_2)
            })
            .sum();
        blocks + self.wte.bytes() + tensor(&self.wpe) + norm(&self.ln_f)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// GPT2Model.forward: `last_hidden_state` and, when asked, hidden states and attentions.
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        let base = super::on_pool(|| self.forward_base(args, cache))?;
        Ok(ModelOutput::base(
            base.last_hidden_state,
            base.hidden_states,
            base.attentions,
        ))
    }

    pub(crate) fn forward_base(
        &self,
        args: &ForwardArgs,
        mut cache: Option<&mut Cache>,
    ) -> Result<BaseOutput> {
        let cfg = &self.config;
        let past = cache.as_ref().map(|c| c.seq_len()).unwrap_or(0);
        // The input's shape first, so everything below is checked before anything is computed.
        let (b, t) = match (args.input_ids, args.inputs_embeds) {
            (Some(_), Some(_)) => {
                return Err(Error::Input(
                    "give either input_ids or inputs_embeds, not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Input(
                    "input_ids or inputs_embeds is required".into(),
                ))
            }
            (Some(ids), None) => match *ids.dims() {
                [t] => (1, t),
                [b, t] => (b, t),
                _ => {
                    return Err(Error::Input(format!(
                        "input_ids must be [batch, seq], got {:?}",
                        ids.dims()
                    )))
                }
            },
            (None, Some(e)) => {
                let (b, t, n) = e.dims3().map_err(|_| {
                    Error::Input(format!(
                        "inputs_embeds must be [batch, seq, n_embd], got {:?}",
                        e.dims()
                    ))
                })?;
                if n != cfg.n_embd {
                    return Err(Error::Input(format!(
                        "inputs_embeds has width {n}, the model's n_embd is {}",
                        cfg.n_embd
                    )));
                }
                (b, t)
            }
        };
        if t == 0 {
            return Err(Error::Input("the input is empty (no tokens)".into()));
        }
        if let Some(c) = cache.as_ref() {
            if c.n_layer() != cfg.n_layer {
                return Err(Error::Input(format!(
                    "the cache has {} layers, the model {}",
                    c.n_layer(),
                    cfg.n_layer
                )));
            }
        }

        let mask_rows = match args.attention_mask {
            Some(m) => Some(mask_rows(m, b, past + t)?),
            None => None,
        };
        // Row-major, [b, t].
        let positions = match args.position_ids {
            Some(p) => {
                let (p, pb, pt) = to_u32_flat(p, "position_ids")?;
                if (pb, pt) != (b, t) {
                    return Err(Error::Input(format!(
                        "position_ids must be [{b}, {t}] like the input"
                    )));
                }
                p
            }
            // transformers' forward: past..past+T whatever the padding (generate passes
            // positions derived from the mask; see position_ids_from_mask).
            None => (0..b)
                .flat_map(|_| past as u32..(past + t) as u32)
                .collect(),
        };
        self.check_positions(past, t, &positions)?;
        // The fused forward (fused.rs) on the CPU, unless asked otherwise or something it does
        // not do (attention maps, dropout) is wanted.
        let fused =
            !args.op_by_op && !args.output_attentions && !args.train && self.device.is_cpu();
        let mut all_hidden = args.output_hidden_states.then(Vec::new);
        let mut all_attn = args.output_attentions.then(Vec::new);
        if fused {
            let e = cfg.n_embd;
            let padded = mask_rows
                .as_deref()
                .filter(|rows| rows.iter().flatten().any(|&m| m == 0));
            // Without a cache of the caller's, one for each layer's keys while it runs.
            let mut own = Cache::new(if cache.is_some() { 0 } else { cfg.n_layer });
            let owned = cache.is_none();
            let cache = cache.unwrap_or(&mut own);
            let mut x = self.embed_fused(args, &positions)?;
            for (i, block) in self.h.iter().enumerate() {
                if let Some(hs) = all_hidden.as_mut() {
                    hs.push(Tensor::from_slice(&x, (b, t, e), &self.device)?);
                }
                block.forward_fused(&mut x, (b, t), cache, i, padded)?;
                if owned {
                    cache.forget(i);
                }
            }
            // A long prompt's working rows are large; a decoding step's are kept for the next.
            if t > 1 && b * t > super::matvec::MAX_ROWS {
                cache.scratch = Default::default();
            }
            super::fused::layer_norm_in_place(&self.ln_f, &mut x)?;
            let hidden = Tensor::from_vec(x, (b, t, e), &self.device)?;
            if let Some(hs) = all_hidden.as_mut() {
                hs.push(hidden.clone());
            }
            return Ok(BaseOutput {
                last_hidden_state: hidden,
                hidden_states: all_hidden,
                attentions: all_attn,
            });
        }

        let inputs_embeds = match (args.input_ids, args.inputs_embeds) {
            (Some(ids), _) => self.embed_tokens(ids)?,
            (None, Some(e)) => e.to_dtype(DType::F32)?,
            (None, None) => unreachable!("checked above"),
        };
        let pos = Tensor::from_vec(positions, (b * t,), &self.device)?;
        let position_embeds = self
            .wpe
            .index_select(&pos, 0)?
            .reshape((b, t, cfg.n_embd))?;
        let mut hidden = (inputs_embeds + position_embeds)?;
        if let Some(tt) = args.token_type_ids {
            hidden = (hidden + self.embed_tokens(tt)?)?;
        }
        let mut hidden = dropout(&hidden, cfg.embd_pdrop, args.train)?;
        let mask = attention_bias(mask_rows.as_deref(), b, past, t, &self.device)?;
        for (i, block) in self.h.iter().enumerate() {
            if let Some(hs) = all_hidden.as_mut() {
                hs.push(hidden.clone());
            }
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            let (next, probs) = block.forward(
                &hidden,
                mask.as_ref(),
                layer_cache,
                // op_by_op asks for the reference path, which the probabilities take.
                args.output_attentions || args.op_by_op,
                args.train,
            )?;
            hidden = next;
            if let (Some(a), Some(p)) = (all_attn.as_mut(), probs) {
                a.push(p);
            }
        }
        let hidden = self.ln_f.forward(&hidden)?;
        if let Some(hs) = all_hidden.as_mut() {
            hs.push(hidden.clone());
        }
        Ok(BaseOutput {
            last_hidden_state: hidden,
            hidden_states: all_hidden,
            attentions: all_attn,
        })
    }

    /// Token ids `[batch, seq]` (or `[seq]`) as one row-major list, each checked against the
    /// vocabulary, and the shape.
    fn token_ids(&self, ids: &Tensor) -> Result<(Vec<u32>, usize, usize)> {
        let (flat, b, t) = to_u32_flat(ids, "input_ids")?;
        self.check_ids(&flat)?;
        Ok((flat, b, t))
    }

    /// Every id inside the vocabulary.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(bad) => Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary (vocab_size {vocab})"
            ))),
            None => Ok(()),
        }
    }

    /// `t` new positions after `past` cached ones, numbered `positions`, within n_positions.
    fn check_positions(&self, past: usize, t: usize, positions: &[u32]) -> Result<()> {
        let n_positions = self.config.n_positions;
        let max_pos = positions.iter().copied().max().unwrap_or(0) as usize;
        if past + t > n_positions || max_pos >= n_positions {
            return Err(Error::Input(format!(
                "sequence length {} exceeds the model's maximum of {} positions (n_positions); truncate the input",
                (past + t).max(max_pos + 1),
                n_positions
            )));
        }
        Ok(())
    }

    /// Each row of `x` (n_embd wide) plus the position embedding of its `positions` entry.
    fn add_positions(&self, x: &mut [f32], positions: &[u32]) -> Result<()> {
        let e = self.config.n_embd;
        with_f32(&self.wpe, |wpe| {
            for (row, &p) in x.chunks_exact_mut(e).zip(positions) {
                let at = &wpe[p as usize * e..][..e];
                row.iter_mut().zip(at).for_each(|(a, b)| *a += b);
            }
        })
        .ok_or_else(|| Error::Input("wpe must be a contiguous f32 CPU tensor".into()))
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let (flat, b, t) = self.token_ids(ids)?;
        let n = flat.len();
        let flat = Tensor::from_vec(flat, (n,), &self.device)?;
        Ok(self.wte.rows(&flat)?.reshape((b, t, self.config.n_embd))?)
    }

    /// The embeddings (tokens + positions + token types) as the fused forward's rows, built in
    /// the one buffer the layers then work on: the op-by-op sum's tensors would be three more
    /// copies of a prompt's rows, each freed before the next allocation.
    fn embed_fused(&self, args: &ForwardArgs, positions: &[u32]) -> Result<Vec<f32>> {
        let e = self.config.n_embd;
        let mut x = match (args.input_ids, args.inputs_embeds) {
            (Some(ids), _) => {
                let (flat, _, _) = self.token_ids(ids)?;
                let mut x = vec![0f32; flat.len() * e];
                self.wte.rows_into(&flat, &mut x)?;
                x
            }
            (None, Some(embeds)) => embeds.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            (None, None) => unreachable!("checked by forward_base"),
        };
        self.add_positions(&mut x, positions)?;
        if let Some(tt) = args.token_type_ids {
            let (flat, _, _) = self.token_ids(tt)?;
            if flat.len() * e != x.len() {
                return Err(Error::Input(
                    "token_type_ids must be shaped like the input".into(),
                ));
            }
            let mut types = vec![0f32; x.len()];
            self.wte.rows_into(&flat, &mut types)?;
            x.iter_mut().zip(&types).for_each(|(a, b)| *a += b);
        }
        Ok(x)
    }
}

/// GPT2LMHeadModel: the transformer plus `lm_head`, tied to `wte` unless the checkpoint has its
/// own (tie_word_embeddings = false).
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    pub transformer: Gpt2Model,
    pub lm_head: Weight, // [vocab_size, n_embd]
    pub tied: bool,
}

impl Gpt2LmHeadModel {
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let transformer = Gpt2Model::load(w, cfg, format, device)?;
        let (lm_head, tied) = load_lm_head(w, &transformer, device)?;
        Ok(Gpt2LmHeadModel {
            transformer,
            lm_head,
            tied,
        })
    }

    pub fn config(&self) -> &Config {
        &self.transformer.config
    }

    /// [`Gpt2Model::weight_bytes`], plus lm_head's own matrix when it is not tied to wte.
    pub fn weight_bytes(&self) -> usize {
        let own = if self.tied { 0 } else { self.lm_head.bytes() };
        self.transformer.weight_bytes() + own
    }

    /// GPT2LMHeadModel.forward. `args.logits_to_keep` > 0 computes logits for only that many
    /// final positions (what generation needs after prefill).
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        super::on_pool(|| self.forward_lm(args, cache))
    }

    /// One decoding step of the generation loop, without tensors: one new token per row
    /// (`ids`, at `positions`, `mask` the attention mask's rows when some are padding) through
    /// the fused forward and the cache, the last logits written into `logits` (rows x vocab).
    /// What [`Self::forward`] computes for a step with `logits_to_keep` 1, minus the tensors it
    /// reads and returns: once warm, a step allocates nothing.
    pub(crate) fn step_logits(
        &self,
        ids: &[u32],
        positions: &[u32],
        mask: Option<&[Vec<u32>]>,
        cache: &mut Cache,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        super::on_pool(|| {
            let m = &self.transformer;
            let cfg = &m.config;
            let (b, e) = (ids.len(), cfg.n_embd);
            if cache.n_layer() != cfg.n_layer || positions.len() != b || !m.device.is_cpu() {
                return Err(Error::Input(
                    "a step needs a CPU model, its cache and a position per row".into(),
                ));
            }
            m.check_ids(ids)?;
            m.check_positions(cache.seq_len(), 1, positions)?;
            let padded = mask.filter(|rows| rows.iter().flatten().any(|&v| v == 0));
            let mut x = std::mem::take(&mut cache.scratch.hidden);
            x.resize(b * e, 0.0);
            let run = (|| -> Result<()> {
                m.wte.rows_into(ids, &mut x)?;
                m.add_positions(&mut x, positions)?;
                for (i, block) in m.h.iter().enumerate() {
                    block.forward_fused(&mut x, (b, 1), cache, i, padded)?;
                }
                super::fused::layer_norm_in_place(&m.ln_f, &mut x)?;
                logits.resize(b * self.lm_head.dims().0, 0.0);
                self.lm_head.linear_into(&x, b, None, logits)
            })();
            cache.scratch.hidden = x;
            run
        })
    }

    fn forward_lm(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        if args.labels.is_some() && args.logits_to_keep != 0 {
            return Err(Error::Input(
                "labels need the logits of every position (logits_to_keep = 0)".into(),
            ));
        }
        let base = self.transformer.forward_base(args, cache)?;
        let hidden = &base.last_hidden_state;
        let (b, t, e) = hidden.dims3()?;
        let keep = if args.logits_to_keep == 0 {
            t
        } else {
            args.logits_to_keep.min(t)
        };
        let logits = match self.last_logits(hidden, keep)? {
            Some(logits) => logits,
            None => {
                let h = hidden.narrow(1, t - keep, keep)?.reshape((b * keep, e))?;
                self.lm_head.linear(&h, None)?.reshape((b, keep, ()))?
            }
        };
        let loss = match args.labels {
            Some(labels) => Some(super::loss::causal_lm_loss(&logits, labels)?),
            None => None,
        };
        Ok(ModelOutput {
            logits: Some(logits),
            loss,
            ..ModelOutput::base(base.last_hidden_state, base.hidden_states, base.attentions)
        })
    }

    /// lm_head over the last `keep` positions of each row of an f32 `[b, t, n_embd]` hidden
    /// state, read in place (a decoding step's one row, or a single prompt's last positions, are
    /// already contiguous); None for a tensor that is not contiguous f32 on the CPU.
    fn last_logits(&self, hidden: &Tensor, keep: usize) -> Result<Option<Tensor>> {
        let (b, t, e) = hidden.dims3()?;
        let vocab = self.lm_head.dims().0;
        let mut y = vec![0f32; b * keep * vocab];
        let done = with_f32(hidden, |hs| {
            if keep == t || b == 1 {
                self.lm_head
                    .linear_into(&hs[(t - keep) * e..], b * keep, None, &mut y)
            } else {
                let rows: Vec<f32> = (0..b)
                    .flat_map(|r| &hs[(r * t + t - keep) * e..(r + 1) * t * e])
                    .copied()
                    .collect();
                self.lm_head.linear_into(&rows, b * keep, None, &mut y)
            }
        });
        match done {
            Some(r) => {
                r?;
                Ok(Some(Tensor::from_vec(
                    y,
                    (b, keep, vocab),
                    hidden.device(),
                )?))
            }
            None => Ok(None),
        }
    }

    /// The state_dict: every tensor with its `transformers` name, in state_dict order
    /// (`lm_head.weight` included even when tied, as PyTorch lists it).
    /// Quantized and half-precision matrices are given as the f32 values they stand for.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let m = &self.transformer;
        out.push(("transformer.wte.weight".into(), m.wte.to_f32()?));
        out.push(("transformer.wpe.weight".into(), m.wpe.clone()));
        for (i, blk) in m.h.iter().enumerate() {
            let p = format!("transformer.h.{i}");
            let mut push = |name: &str, t: &Tensor| out.push((format!("{p}.{name}"), t.clone()));
            push("ln_1.weight", &blk.ln_1.weight);
            push("ln_1.bias", &blk.ln_1.bias);
            push("attn.c_attn.weight", &blk.attn.c_attn.weight()?);
            push("attn.c_attn.bias", &blk.attn.c_attn.bias);
            push("attn.c_proj.weight", &blk.attn.c_proj.weight()?);
            push("attn.c_proj.bias", &blk.attn.c_proj.bias);
            push("ln_2.weight", &blk.ln_2.weight);
            push("ln_2.bias", &blk.ln_2.bias);
            push("mlp.c_fc.weight", &blk.mlp.c_fc.weight()?);
            push("mlp.c_fc.bias", &blk.mlp.c_fc.bias);
            push("mlp.c_proj.weight", &blk.mlp.c_proj.weight()?);
            push("mlp.c_proj.bias", &blk.mlp.c_proj.bias);
            for p in blk.mlp.act.parameters() {
                let t = if p.learned {
                    Tensor::new(&[p.value], m.device())
                } else {
                    Tensor::new(p.value, m.device())
                };
                push(
                    &format!("mlp.act.{}", p.name),
                    &t.expect("a small CPU tensor"),
                );
            }
        }
        out.push(("transformer.ln_f.weight".into(), m.ln_f.weight.clone()));
        out.push(("transformer.ln_f.bias".into(), m.ln_f.bias.clone()));
        out.push(("lm_head.weight".into(), self.lm_head.to_f32()?));
        Ok(out)
    }

    /// The number of parameters as `model.num_parameters()` counts them: a tied lm_head once,
    /// buffers (xIELU's beta / eps) not at all.
    pub fn num_parameters(&self) -> usize {
        let buffers: usize = self
            .transformer
            .h
            .iter()
            .map(|b| b.mlp.act.parameters().iter().filter(|p| !p.learned).count())
            .sum();
        let m = &self.transformer;
        let small = m.wpe.elem_count()
            + 2 * m.ln_f.weight.elem_count()
            + m.h
                .iter()
                .map(|b| {
                    let convs = [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj];
                    let mats: usize = convs
                        .iter()
                        .map(|c| c.weight_t.elem_count() + c.bias.elem_count())
                        .sum();
                    let lns = 2 * (b.ln_1.weight.elem_count() + b.ln_2.weight.elem_count());
                    mats + lns + b.mlp.act.parameters().len()
                })
                .sum::<usize>();
        let all = m.wte.elem_count() + small + self.lm_head.elem_count();
        let tied = if self.tied {
            self.lm_head.elem_count()
        } else {
            0
        };
        all - buffers - tied
    }
}

/// `lm_head.weight` `[vocab_size, n_embd]`: `wte` when tied (the flag returned), else the
/// checkpoint's own, in the transformer's format.
pub(crate) fn load_lm_head(
    w: &Weights,
    transformer: &Gpt2Model,
    device: &Device,
) -> Result<(Weight, bool)> {
    let cfg = &transformer.config;
    if cfg.tie_word_embeddings {
        return Ok((transformer.wte.clone(), true));
    }
    let shape = [cfg.vocab_size, cfg.n_embd];
    let dims = (shape[0], shape[1]);
    Ok((
        Weight::load(
            w,
            "lm_head.weight",
            dims,
            false,
            transformer.format(),
            device,
        )?,
        false,
    ))
}

/// A config that does not describe the weights is an error, not a silently truncated model:
/// transformers warns and drops unused tensors; here extra layers mean the wrong config.json.
fn check_weights_match_config(w: &Weights, cfg: &Config) -> Result<()> {
    for name in w.names() {
        let Some(rest) = name.strip_prefix("h.") else {
            continue;
        };
        let Some(idx) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        if idx >= cfg.n_layer {
            return Err(Error::Input(format!(
                "the weights have layer h.{idx} ({name}) but config.json says n_layer = {}: config and weights do not match",
                cfg.n_layer
            )));
        }
    }
    Ok(())
}

/// Integer tensor [B, T] (any integer or float dtype) as rows of u32.
fn to_u32_rows(t: &Tensor, what: &str) -> Result<Vec<Vec<u32>>> {
    let (flat, b, s) = to_u32_flat(t, what)?;
    Ok(if s == 0 {
        vec![Vec::new(); b]
    } else {
        flat.chunks(s).map(<[u32]>::to_vec).collect()
    })
}

/// Integer tensor [B, T] (or [T]) as one row-major list of u32, and B and T.
fn to_u32_flat(t: &Tensor, what: &str) -> Result<(Vec<u32>, usize, usize)> {
    let t = match t.rank() {
        1 => t.unsqueeze(0)?,
        2 => t.clone(),
        _ => {
            return Err(Error::Input(format!(
                "{what} must be [batch, seq], got {:?}",
                t.dims()
            )))
        }
    };
    let (b, s) = t.dims2()?;
    let check = |v: i64| {
        u32::try_from(v)
            .map_err(|_| Error::Input(format!("{what} has a negative or huge value {v}")))
    };
    // The ids a decoding step gets (u32 or i64, contiguous) are read where they lie: converting
    // through an i64 tensor and nested Vecs was two thirds of a step's allocations.
    let flat: Vec<u32> = {
        let (storage, layout) = t.storage_and_layout();
        let at = layout.start_offset()..layout.start_offset() + b * s;
        match (&*storage, t.is_contiguous()) {
            (Storage::Cpu(CpuStorage::U32(v)), true) => v[at].to_vec(),
            (Storage::Cpu(CpuStorage::I64(v)), true) => {
                v[at].iter().map(|&x| check(x)).collect::<Result<_>>()?
            }
            _ => {
                drop(storage);
                let as_i64 = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
                as_i64.into_iter().map(check).collect::<Result<_>>()?
            }
        }
    };
    Ok((flat, b, s))
}

fn mask_rows(mask: &Tensor, b: usize, s: usize) -> Result<Vec<Vec<u32>>> {
    let rows = to_u32_rows(mask, "attention_mask")?;
    if rows.len() != b || rows.iter().any(|r| r.len() != s) {
        return Err(Error::Input(format!(
            "attention_mask must be [{b}, {s}] (batch, cached + new positions), got [{}, {}]",
            rows.len(),
            rows.first().map_or(0, Vec::len)
        )));
    }
    Ok(rows)
}

/// The position ids `generate` derives from an attention mask `[batch, past + t]` for the
/// last `t` positions: `cumsum(mask) - 1`, padding at 1, so left-padded rows count from 0.
/// A plain forward without position ids numbers positions past..past+t instead, as in
/// transformers; pass these to get generate's numbering.
pub fn position_ids_from_mask(mask: &Tensor, t: usize) -> Result<Tensor> {
    let rows = to_u32_rows(mask, "attention_mask")?;
    let (b, s) = (rows.len(), rows.first().map_or(0, Vec::len));
    if t > s {
        return Err(Error::Input(format!(
            "asked for {t} positions of a mask of {s} columns"
        )));
    }
    let ids = derive_position_ids(Some(&rows), b, s - t, t);
    Ok(Tensor::from_vec(ids.concat(), (b, t), mask.device())?)
}

/// Position ids: from the attention mask rows as `generate` derives them, or without a mask
/// past..past+T.
fn derive_position_ids(
    mask: Option<&[Vec<u32>]>,
    b: usize,
    past: usize,
    t: usize,
) -> Vec<Vec<u32>> {
    match mask {
        Some(rows) => rows
            .iter()
            .map(|row| {
                // Real positions before the last t, then each one's count (1 for padding).
                let start = row.len() - t;
                let mut seen = row[..start].iter().filter(|&&m| m != 0).count() as u32;
                row[start..]
                    .iter()
                    .map(|&m| {
                        seen += (m != 0) as u32;
                        if m == 0 {
                            1
                        } else {
                            seen - 1
                        }
                    })
                    .collect()
            })
            .collect(),
        None => vec![(past as u32..(past + t) as u32).collect(); b],
    }
}

/// The additive attention bias [B, 1, T, S]: 0 where query i may see key j (causal and not
/// padding), f32::MIN elsewhere, as transformers' eager path builds it. None when nothing is
/// masked (a single new token with no padding).
fn attention_bias(
    mask: Option<&[Vec<u32>]>,
    b: usize,
    past: usize,
    t: usize,
    device: &Device,
) -> Result<Option<Tensor>> {
    let s = past + t;
    let padded = mask.is_some_and(|rows| rows.iter().flatten().any(|&m| m == 0));
    if t == 1 && !padded {
        return Ok(None);
    }
    let mut bias = vec![0f32; b * t * s];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..s {
                let visible = j <= past + i && mask.is_none_or(|rows| rows[bi][j] != 0);
                if !visible {
                    bias[(bi * t + i) * s + j] = f32::MIN;
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(bias, (b, 1, t, s), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    #[test]
    fn position_ids_from_left_padding() {
        let mask = vec![vec![0, 0, 1, 1, 1], vec![1, 1, 1, 1, 1]];
        assert_eq!(
            derive_position_ids(Some(&mask), 2, 0, 5),
            vec![vec![1, 1, 0, 1, 2], vec![0, 1, 2, 3, 4]]
        );
        // A decode step: the last column of the full mask's positions.
        assert_eq!(
            derive_position_ids(Some(&mask), 2, 4, 1),
            vec![vec![2], vec![4]]
        );
        assert_eq!(derive_position_ids(None, 1, 3, 2), vec![vec![3, 4]]);
    }

    #[test]
    fn bias_is_causal_and_masks_padding() {
        let mask = vec![vec![0, 1, 1]];
        let bias = attention_bias(Some(&mask), 1, 0, 3, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = bias.i((0, 0)).unwrap().to_vec2::<f32>().unwrap();
        let m = f32::MIN;
        assert_eq!(v, vec![vec![m, m, m], vec![m, 0.0, m], vec![m, 0.0, 0.0]]);
        assert!(attention_bias(None, 1, 5, 1, &Device::Cpu)
            .unwrap()
            .is_none());
    }
}
