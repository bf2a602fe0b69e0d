//! VGG-16 and VGG-19 (Simonyan & Zisserman 2014) in torchvision's state-dict layout
//! (`features.N.weight`, `classifier.{0,3,6}.weight`), with ImageNet mean/std normalisation.
//!
//! Every torchvision module is a layer, addressable by its path (`features.18`), and the
//! Keras/Brain-Score names are aliases: `blockB_convC` is the ReLU after that convolution (Keras
//! fuses the activation into the conv layer), `blockB_pool` the max-pool, `fc1`/`fc2` the ReLUs
//! after the first two linear layers, `predictions` and `logits` the classifier output.
//! So in vgg19 `block3_pool` = `features.18`.

use tch::nn;

use super::ops::{Activation, AdaptiveAvgPool, Conv2d, ConvConfig, Linear, MaxPool, Padding};
use super::{InputNorm, Stage};

pub const INPUT: InputNorm = InputNorm::MeanStd {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// Convolutions per block (all 3x3, stride 1, padding 1), then a 2x2 max-pool.
const VGG16_BLOCKS: [usize; 5] = [2, 2, 3, 3, 3];
const VGG19_BLOCKS: [usize; 5] = [2, 2, 4, 4, 4];
const WIDTHS: [i64; 5] = [64, 128, 256, 512, 512];

pub fn vgg16(p: &nn::Path) -> Vec<Stage> {
    vgg(p, &VGG16_BLOCKS)
}

pub fn vgg19(p: &nn::Path) -> Vec<Stage> {
    vgg(p, &VGG19_BLOCKS)
}

fn vgg(p: &nn::Path, blocks: &[usize; 5]) -> Vec<Stage> {
    let features = p / "features";
    let mut stages = Vec::new();
    let mut cin = 3;
    for (b, (&convs, &width)) in blocks.iter().zip(WIDTHS.iter()).enumerate() {
        let block = b + 1;
        for c in 1..=convs {
            let i = stages.len();
            let cfg = ConvConfig {
                stride: 1,
                padding: Padding::Fixed(1),
                groups: 1,
                bias: true,
            };
            stages.push(Stage::new(
                &format!("features.{i}"),
                &[],
                Conv2d::new(&(&features / i), cin, width, 3, cfg),
            ));
            let relu = format!("features.{}", i + 1);
            stages.push(Stage::new(
                &format!("block{block}_conv{c}"),
                &[&relu],
                Activation::Relu,
            ));
            cin = width;
        }
        let i = stages.len();
        stages.push(Stage::new(
            &format!("block{block}_pool"),
            &[&format!("features.{i}")],
            MaxPool {
                kernel: 2,
                stride: 2,
            },
        ));
    }
    stages.push(Stage::new("avgpool", &[], AdaptiveAvgPool(7)));
    let classifier = p / "classifier";
    let fc = |i: usize, cin: i64, cout: i64| Linear::new(&(&classifier / i), cin, cout);
    stages.push(Stage::new("classifier.0", &[], fc(0, 512 * 7 * 7, 4096)));
    stages.push(Stage::new("fc1", &["classifier.1"], Activation::Relu));
    stages.push(Stage::new("classifier.2", &[], Activation::Identity));
    stages.push(Stage::new("classifier.3", &[], fc(3, 4096, 4096)));
    stages.push(Stage::new("fc2", &["classifier.4"], Activation::Relu));
    stages.push(Stage::new("classifier.5", &[], Activation::Identity));
    stages.push(Stage::new(
        "logits",
        &["classifier.6", "predictions"],
        fc(6, 4096, 1000),
    ));
    stages
}
