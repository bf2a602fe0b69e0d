//! Fallible building blocks for networks. Each op calls libtorch's `f_*` functions so that a
//! shape problem (an image too small for a pooling stage, say) comes back as an error rather
//! than a panic. Parameters live in the network's `VarStore` under the path they were created
//! with, which is the name they have in the safetensors file.

use tch::{nn, Kind, TchError, Tensor};

pub type OpResult = Result<Tensor, TchError>;

/// How an op's output rows depend on its input rows, along one axis of a map `size` rows long
/// (ops treat rows and columns alike; `Op::locality`): output row o reads input rows
/// [o stride - before, o stride - before + kernel), zeros (the op's padding) where those lie
/// beyond the map, and there are `outputs` rows. It lets `Network::forward_to_channels` run only
/// the part of a map that differs from a uniform background.
///
/// `before` may depend on the input size (TensorFlow "SAME" padding does), but only through its
/// remainder modulo `stride`: a crop of the map that starts at a multiple of `stride` and whose
/// size has the map's remainder is padded before as the map is, so its output row j is the
/// map's output row start / stride + j wherever the rows it reads hold the map's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locality {
    pub kernel: i64,
    pub stride: i64,
    pub before: i64,
    pub outputs: i64,
}

impl Locality {
    /// Output row o reads input row o alone (activations).
    pub fn pointwise(size: i64) -> Locality {
        Locality {
            kernel: 1,
            stride: 1,
            before: 0,
            outputs: size,
        }
    }

    /// A window of `kernel` rows moved by `stride` over `size` rows with `before` and `after`
    /// rows of padding, as convolutions and pooling read (None when no window fits).
    pub fn strided(
        kernel: i64,
        stride: i64,
        (before, after): (i64, i64),
        size: i64,
    ) -> Option<Locality> {
        let outputs = (size + before + after - kernel).div_euclid(stride) + 1;
        (size > 0 && outputs > 0).then_some(Locality {
            kernel,
            stride,
            before,
            outputs,
        })
    }

    /// `self`, then `next` on its output rows: output o of `next` reads rows
    /// [o s2 - p2, o s2 - p2 + k2) of the middle, which read input rows from (o s2 - p2) s1 - p1
    /// to (o s2 - p2 + k2 - 1) s1 - p1 + k1. `before` keeps depending on the size only modulo
    /// the stride: sizes equal modulo s1 s2 have middles equal modulo s2.
    pub fn then(self, next: Locality) -> Locality {
        Locality {
            kernel: (next.kernel - 1) * self.stride + self.kernel,
            stride: self.stride * next.stride,
            before: next.before * self.stride + self.before,
            outputs: next.outputs,
        }
    }
}

/// One stage of a network: maps the previous stage's output to its own.
pub trait Op: Send {
    fn forward(&self, x: &Tensor) -> OpResult;

    /// Output channels `channels` (int64 indices on `x`'s device) of `forward(x)`: the same
    /// values as `forward(x).index_select(1, channels)` up to float rounding. Ops that can skip
    /// the other channels' work (a convolution computing only some filters) override it.
    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        self.forward(x)?.f_index_select(1, channels)
    }

    /// `forward` of an input that nothing else holds, so that the op may overwrite it rather
    /// than allocate its output (activations run in place). For evaluation without gradients.
    fn forward_owned(&self, x: Tensor) -> OpResult {
        self.forward(&x)
    }

    /// True when output channel c depends on input channel c alone (activations, pooling), so
    /// that the op can run on any subset of channels: `forward(x.index_select(1, k))` equals
    /// `forward(x).index_select(1, k)`.
    fn channelwise(&self) -> bool {
        false
    }

    /// How output rows depend on input rows along an axis of `size` rows, where the op knows
    /// (see `Locality`); None for ops that mix the whole map (then `forward_to_channels` runs
    /// whole maps).
    fn locality(&self, _size: i64) -> Option<Locality> {
        None
    }
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy)]
pub enum Padding {
    /// Symmetric zero padding of this many pixels (PyTorch style).
    Fixed(i64),
    /// TensorFlow "SAME": output = ceil(input / stride); the odd pixel goes right/bottom.
    Same,
}

#[derive(Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: i64,
    stride: i64,
    padding: Padding,
    groups: i64,
}

pub struct ConvConfig {
    pub stride: i64,
    pub padding: Padding,
    pub groups: i64,
    pub bias: bool,
}

impl Conv2d {
    pub fn new(p: &nn::Path, cin: i64, cout: i64, kernel: i64, cfg: ConvConfig) -> Conv2d {
        let weight = p.var(
            "weight",
            &[cout, cin / cfg.groups, kernel, kernel],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        );
        let bias = cfg
            .bias
            .then(|| p.var("bias", &[cout], nn::Init::Const(0.0)));
        Conv2d {
            weight,
            bias,
            kernel,
            stride: cfg.stride,
            padding: cfg.padding,
            groups: cfg.groups,
        }
    }

    /// Where the convolution reads along an axis of `size` rows.
    fn reads(&self, size: i64) -> Option<Locality> {
        let padding = match self.padding {
            Padding::Fixed(p) => (p, p),
            Padding::Same => self.same_pad(size),
        };
        Locality::strided(self.kernel, self.stride, padding, size)
    }

    /// Padding (left, right) for one spatial dimension under TF "SAME". The total is
    /// kernel - stride + (-size mod stride) (at least 0): it depends on the size only modulo the
    /// stride, as `Locality` requires.
    fn same_pad(&self, size: i64) -> (i64, i64) {
        let out = (size + self.stride - 1) / self.stride;
        let total = ((out - 1) * self.stride + self.kernel - size).max(0);
        (total / 2, total - total / 2)
    }
}

impl Conv2d {
    /// Convolves with explicit weights (its own, or BN-folded ones), honouring the padding.
    fn convolve(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> OpResult {
        let conv =
            |x: &Tensor, pad: i64| x.f_conv2d(weight, bias, [self.stride], [pad], [1], self.groups);
        match self.padding {
            Padding::Fixed(p) => conv(x, p),
            Padding::Same => {
                let (h, w) = (x.size()[2], x.size()[3]);
                let (top, bottom) = self.same_pad(h);
                let (left, right) = self.same_pad(w);
                // Symmetric SAME padding (every stride-1 conv with an odd kernel) folds into the
                // convolution itself and saves a padded copy of the activations.
                if top == bottom && left == right && top == left {
                    conv(x, top)
                } else {
                    conv(&x.f_constant_pad_nd([left, right, top, bottom])?, 0)
                }
            }
        }
    }
}

impl Conv2d {
    /// Convolves with only the filters `channels` of `weight` and `bias` (when the convolution
    /// is not grouped; a grouped one computes everything and selects).
    fn convolve_channels(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        channels: &Tensor,
    ) -> OpResult {
        if self.groups != 1 {
            return self.convolve(x, weight, bias)?.f_index_select(1, channels);
        }
        let weight = weight.f_index_select(0, channels)?;
        let bias = bias.map(|b| b.f_index_select(0, channels)).transpose()?;
        self.convolve(x, &weight, bias.as_ref())
    }
}

impl Op for Conv2d {
    fn forward(&self, x: &Tensor) -> OpResult {
        self.convolve(x, &self.weight, self.bias.as_ref())
    }

    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        self.convolve_channels(x, &self.weight, self.bias.as_ref(), channels)
    }

    fn locality(&self, size: i64) -> Option<Locality> {
        self.reads(size)
    }
}

/// Inference-mode batch normalisation (running statistics, never updated).
#[derive(Debug)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
}

impl BatchNorm {
    pub fn new(p: &nn::Path, channels: i64, eps: f64) -> BatchNorm {
        BatchNorm {
            weight: p.var("weight", &[channels], nn::Init::Const(1.0)),
            bias: p.var("bias", &[channels], nn::Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            eps,
        }
    }
}

impl Op for BatchNorm {
    fn forward(&self, x: &Tensor) -> OpResult {
        x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.0,
            self.eps,
            true,
        )
    }
}

/// A convolution followed by inference-mode batch norm, run as one convolution with the
/// normalisation folded into its weights: with k = gamma / sqrt(var + eps),
/// w' = w k (per output channel) and b' = beta + (b - mean) k.
/// That saves a full pass over the activations forward and backward. The fold is recomputed on
/// every call: the weights are tiny next to the activations, and the op then always reflects
/// the current parameters (after a load, or an edit in a test).
#[derive(Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    /// The convolution's weight and bias with the batch norm folded in.
    fn folded(&self) -> Result<(Tensor, Tensor), TchError> {
        let bn = &self.bn;
        let k = bn
            .weight
            .f_div(&bn.running_var.f_add_scalar(bn.eps)?.f_sqrt()?)?;
        let weight = self.conv.weight.f_mul(&k.f_view([-1, 1, 1, 1])?)?;
        let shift = match &self.conv.bias {
            Some(b) => b.f_sub(&bn.running_mean)?,
            None => bn.running_mean.f_neg()?,
        };
        let bias = bn.bias.f_add(&shift.f_mul(&k)?)?;
        Ok((weight, bias))
    }
}

impl Op for ConvBn {
    fn forward(&self, x: &Tensor) -> OpResult {
        let (weight, bias) = self.folded()?;
        self.conv.convolve(x, &weight, Some(&bias))
    }

    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        let (weight, bias) = self.folded()?;
        self.conv
            .convolve_channels(x, &weight, Some(&bias), channels)
    }

    fn locality(&self, size: i64) -> Option<Locality> {
        self.conv.reads(size)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Activation {
    Relu,
    Relu6,
    /// Dropout at inference time: the identity, kept so layer indices match torchvision's.
    Identity,
}

impl Op for Activation {
    fn forward(&self, x: &Tensor) -> OpResult {
        match self {
            Activation::Relu => x.f_relu(),
            Activation::Relu6 => x.f_relu6(),
            Activation::Identity => Ok(x.shallow_clone()),
        }
    }

    fn forward_owned(&self, mut x: Tensor) -> OpResult {
        match self {
            Activation::Relu => x.f_relu_(),
            Activation::Relu6 => x.f_relu6_(),
            Activation::Identity => Ok(x),
        }
    }

    fn channelwise(&self) -> bool {
        true
    }

    fn locality(&self, size: i64) -> Option<Locality> {
        Some(Locality::pointwise(size))
    }
}

#[derive(Debug)]
pub struct MaxPool {
    pub kernel: i64,
    pub stride: i64,
}

impl Op for MaxPool {
    fn forward(&self, x: &Tensor) -> OpResult {
        x.f_max_pool2d([self.kernel], [self.stride], [0], [1], false)
    }

    fn channelwise(&self) -> bool {
        true
    }

    fn locality(&self, size: i64) -> Option<Locality> {
        Locality::strided(self.kernel, self.stride, (0, 0), size)
    }
}

#[derive(Debug)]
pub struct AdaptiveAvgPool(pub i64);

impl Op for AdaptiveAvgPool {
    fn forward(&self, x: &Tensor) -> OpResult {
        x.f_adaptive_avg_pool2d([self.0, self.0])
    }

    fn channelwise(&self) -> bool {
        true
    }
}

/// Fully connected layer; flattens a 4-D input first (as torchvision's `torch.flatten(x, 1)`).
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(p: &nn::Path, cin: i64, cout: i64) -> Linear {
        let bound = 1.0 / (cin as f64).sqrt();
        Linear {
            weight: p.var(
                "weight",
                &[cout, cin],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            bias: p.var(
                "bias",
                &[cout],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
        }
    }
}

impl Linear {
    fn flat(x: &Tensor) -> OpResult {
        if x.dim() > 2 {
            x.f_flatten(1, -1)
        } else {
            Ok(x.shallow_clone())
        }
    }
}

impl Op for Linear {
    fn forward(&self, x: &Tensor) -> OpResult {
        Linear::flat(x)?.f_linear(&self.weight, Some(&self.bias))
    }

    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        let weight = self.weight.f_index_select(0, channels)?;
        let bias = self.bias.f_index_select(0, channels)?;
        Linear::flat(x)?.f_linear(&weight, Some(&bias))
    }
}

/// Global average pooling followed by a linear classifier (EfficientNet's `_fc`).
#[derive(Debug)]
pub struct PoolLinear(pub Linear);

impl Op for PoolLinear {
    fn forward(&self, x: &Tensor) -> OpResult {
        self.0
            .forward(&x.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?)
    }

    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        self.0
            .forward_channels(&x.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?, channels)
    }
}

/// Ops applied one after another; a single named layer made of several ops.
pub struct Chain(pub Vec<Box<dyn Op>>);

impl Chain {
    /// `ops` one after another on `x`, which they may overwrite.
    fn run_owned(ops: &[Box<dyn Op>], x: Tensor) -> OpResult {
        let mut h = x;
        for op in ops {
            h = op.forward_owned(h)?;
        }
        Ok(h)
    }

    /// The chain on an input the caller still needs: the first op leaves `x` alone, the later
    /// ones overwrite the chain's own intermediate results. For evaluation without gradients.
    pub(crate) fn forward_borrowed(&self, x: &Tensor) -> OpResult {
        match self.0.split_first() {
            Some((first, rest)) => Chain::run_owned(rest, first.forward(x)?),
            None => Ok(x.shallow_clone()),
        }
    }
}

impl Op for Chain {
    fn forward(&self, x: &Tensor) -> OpResult {
        let mut h = x.shallow_clone();
        for op in &self.0 {
            h = op.forward(&h)?;
        }
        Ok(h)
    }

    fn forward_owned(&self, x: Tensor) -> OpResult {
        Chain::run_owned(&self.0, x)
    }

    /// Runs the ops before the last one that mixes channels in full, that one for `channels`
    /// only, and the channelwise ops after it on those channels alone. Like `forward_owned`,
    /// for evaluation without gradients: the chain's own intermediate results are overwritten
    /// in place (never `x`).
    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        let Some(last) = self.0.iter().rposition(|op| !op.channelwise()) else {
            return self.forward_borrowed(x)?.f_index_select(1, channels);
        };
        let mut h = match last {
            0 => self.0[0].forward_channels(x, channels)?,
            _ => {
                let h = Chain::run_owned(&self.0[1..last], self.0[0].forward(x)?)?;
                self.0[last].forward_channels(&h, channels)?
            }
        };
        for op in &self.0[last + 1..] {
            h = op.forward_owned(h)?;
        }
        Ok(h)
    }

    fn channelwise(&self) -> bool {
        self.0.iter().all(|op| op.channelwise())
    }

    /// The ops' localities composed (`Locality::then`).
    fn locality(&self, size: i64) -> Option<Locality> {
        self.0.iter().try_fold(Locality::pointwise(size), |l, op| {
            Some(l.then(op.locality(l.outputs)?))
        })
    }
}
