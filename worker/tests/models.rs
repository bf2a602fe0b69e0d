//! The model zoo against PyTorch: same weights, same input => same activations at every named
//! layer (within 1e-4 relative), and the real EfficientNet-Lite0 sees cats and espresso.

mod common;

use common::{fixtures, lite0_weights, rel_err};
use tch::{Device, Tensor};
use vephys_worker::image_io;
use vephys_worker::models::Network;

fn assert_parity(model: &str, weights: std::path::PathBuf, expect_layers: usize) {
    let mut net = Network::build(model, Device::Cpu).unwrap();
    net.load_weights(&weights).unwrap();
    let reference =
        Tensor::read_safetensors(fixtures().join(format!("{model}_reference.safetensors")))
            .unwrap();
    let input = &reference.iter().find(|(k, _)| k == "input").unwrap().1;
    let outputs = net.forward_all(input).unwrap();
    let mut checked = 0;
    for (name, expected) in &reference {
        if name == "input" {
            continue;
        }
        let index = net
            .layer_index(name)
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let err = rel_err(&outputs[index], expected);
        assert!(
            err <= 1e-4,
            "{model} layer {name}: relative error {err:.2e}"
        );
        checked += 1;
    }
    assert_eq!(
        checked, expect_layers,
        "{model}: every reference layer compared"
    );
}

#[test]
fn vgg16_matches_torchvision_at_every_layer() {
    assert_parity("vgg16", fixtures().join("vgg16.safetensors"), 31 + 1 + 7);
}

#[test]
fn vgg19_matches_torchvision_at_every_layer() {
    assert_parity("vgg19", fixtures().join("vgg19.safetensors"), 37 + 1 + 7);
}

#[test]
fn efficientnet_lite0_matches_pytorch_reference_at_every_layer() {
    assert_parity("efficientnet_lite0", lite0_weights(), 1 + 16 + 2);
}

#[test]
fn vgg19_keras_names_are_aliases_of_torchvision_paths() {
    let net = Network::build("vgg19", Device::Cpu).unwrap();
    assert_eq!(
        net.layer_index("block3_pool").unwrap(),
        net.layer_index("features.18").unwrap()
    );
    assert_eq!(
        net.layer_index("block1_conv1").unwrap(),
        net.layer_index("features.1").unwrap()
    );
    assert_eq!(
        net.layer_index("block5_pool").unwrap(),
        net.layer_index("features.36").unwrap()
    );
    assert_eq!(
        net.layer_index("logits").unwrap(),
        net.layer_index("classifier.6").unwrap()
    );
    let shapes = net.layer_shapes(224).unwrap();
    let pool3 = &shapes[net.layer_index("block3_pool").unwrap()];
    assert_eq!((pool3.channels, pool3.height, pool3.width), (256, 28, 28));
    assert!(net.layer_index("block6_pool").is_err());
}

#[test]
fn efficientnet_lite0_layers_have_the_published_shapes() {
    let net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
    let shapes = net.layer_shapes(224).unwrap();
    let names: Vec<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 19);
    assert_eq!(names[0], "stem");
    assert_eq!(names[16], "blocks.15");
    assert_eq!(&names[17..], ["head", "logits"]);
    let dims = |i: usize| (shapes[i].channels, shapes[i].height, shapes[i].width);
    assert_eq!(dims(0), (32, 112, 112));
    assert_eq!(dims(1), (16, 112, 112));
    assert_eq!(dims(8), (80, 14, 14));
    assert_eq!(dims(16), (320, 7, 7));
    assert_eq!(dims(17), (1280, 7, 7));
    assert_eq!(dims(18), (1000, 1, 1));
}

fn top1(net: &Network, photo: &str) -> i64 {
    let image = image_io::load(&fixtures().join("photos").join(photo), Some(224)).unwrap();
    let logits = net
        .forward_to(&image.unsqueeze(0), net.layer_index("logits").unwrap())
        .unwrap();
    logits.flatten(0, -1).argmax(0, false).int64_value(&[])
}

#[test]
fn efficientnet_lite0_real_weights_classify_photos() {
    let mut net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
    net.load_weights(&lite0_weights()).unwrap();
    let cat = top1(&net, "chelsea.png");
    assert!(
        [281, 282, 285].contains(&cat),
        "chelsea classified as {cat}, expected a cat (281, 282, 285)"
    );
    assert_eq!(top1(&net, "coffee.png"), 967, "coffee is espresso");
    assert_eq!(net.weights_sha256().map(str::len), Some(64));
}

#[test]
fn mismatched_weights_are_refused_with_the_reason() {
    let mut net = Network::build("vgg19", Device::Cpu).unwrap();
    let err = net
        .load_weights(&fixtures().join("vgg16.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not match vgg19") || err.contains("expects"),
        "{err}"
    );
    let err = net.load_weights(&lite0_weights()).unwrap_err().to_string();
    assert!(
        err.contains("missing tensor") && err.contains("unexpected tensor"),
        "{err}"
    );
    let err = net
        .load_weights(std::path::Path::new("/nonexistent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not a safetensors file").unwrap();
    let err = net.load_weights(junk.path()).unwrap_err().to_string();
    assert!(err.contains("safetensors"), "{err}");
    assert!(
        net.weights_sha256().is_none(),
        "a failed load must not claim weights"
    );
}

#[test]
fn unknown_models_and_layers_are_named_in_errors() {
    let err = Network::build("resnet50", Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown model `resnet50`") && err.contains("vgg19"),
        "{err}"
    );
    let net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
    let err = net.layer_index("blocks.16").unwrap_err().to_string();
    assert!(err.contains("no layer `blocks.16`"), "{err}");
}

#[test]
fn too_small_images_name_the_minimum_size() {
    let net = Network::build("vgg19", Device::Cpu).unwrap();
    let err = net
        .check_size(net.layer_index("block5_pool").unwrap(), 16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("use a size of at least 32"), "{err}");
    assert!(net
        .check_size(net.layer_index("block5_pool").unwrap(), 32)
        .is_ok());
}
