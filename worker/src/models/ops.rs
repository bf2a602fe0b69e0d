//! Fallible building blocks for networks. Each op calls libtorch's `f_*` functions so that a
//! shape problem (an image too small for a pooling stage, say) comes back as an error rather
//! than a panic. Parameters live in the network's `VarStore` under the path they were created
//! with, which is the name they have in the safetensors file.

use tch::{nn, Kind, TchError, Tensor};

pub type OpResult = Result<Tensor, TchError>;

/// One stage of a network: maps the previous stage's output to its own.
pub trait Op: Send {
    fn forward(&self, x: &Tensor) -> OpResult;
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

    /// Padding (left, right) for one spatial dimension under TF "SAME".
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

impl Op for Conv2d {
    fn forward(&self, x: &Tensor) -> OpResult {
        self.convolve(x, &self.weight, self.bias.as_ref())
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

impl Op for ConvBn {
    fn forward(&self, x: &Tensor) -> OpResult {
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
        self.conv.convolve(x, &weight, Some(&bias))
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
}

#[derive(Debug)]
pub struct AdaptiveAvgPool(pub i64);

impl Op for AdaptiveAvgPool {
    fn forward(&self, x: &Tensor) -> OpResult {
        x.f_adaptive_avg_pool2d([self.0, self.0])
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

impl Op for Linear {
    fn forward(&self, x: &Tensor) -> OpResult {
        let x = if x.dim() > 2 {
            x.f_flatten(1, -1)?
        } else {
            x.shallow_clone()
        };
        x.f_linear(&self.weight, Some(&self.bias))
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
}

/// Ops applied one after another; a single named layer made of several ops.
pub struct Chain(pub Vec<Box<dyn Op>>);

impl Op for Chain {
    fn forward(&self, x: &Tensor) -> OpResult {
        let mut h = x.shallow_clone();
        for op in &self.0 {
            h = op.forward(&h)?;
        }
        Ok(h)
    }
}
