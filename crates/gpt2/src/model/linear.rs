//! `nn.Linear`, what the task heads are made of (the transformer's own layers are Conv1D).

use candle_core::{DType, Device, Tensor};

use super::auto::Architecture;
use super::heads::head_tensor;
use crate::config::Config;
use crate::error::Result;
use crate::weights::Weights;

/// `nn.Linear`: `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out_features, in_features]`, as PyTorch stores it.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `{prefix}.weight` (and `{prefix}.bias`), which the checkpoint must have: a missing one is
    /// [`crate::Error::MissingHead`] naming `wanted`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        w: &Weights,
        cfg: &Config,
        wanted: Architecture,
        prefix: &str,
        [out_features, in_features]: [usize; 2],
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Linear> {
        let get = |name: &str, shape: &[usize]| {
            head_tensor(
                w,
                cfg,
                wanted,
                &format!("{prefix}.{name}"),
                shape,
                dtype,
                device,
            )
        };
        Ok(Linear {
            weight: get("weight", &[out_features, in_features])?,
            bias: if bias {
                Some(get("bias", &[out_features])?)
            } else {
                None
            },
        })
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x` `[..., in_features]` to `[..., out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(0);
        let rows = dims.iter().product::<usize>();
        let y = x.reshape((rows, k))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        dims.push(self.out_features());
        Ok(y.reshape(dims)?)
    }
}
