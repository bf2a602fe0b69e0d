//! The synthesis engine on the real EfficientNet-Lite0: reproducible, batch-independent,
//! single-colour exact, dead units reported, and — the science — each max image drives its
//! filter harder than any natural photo does.

mod common;

use common::{lite0_weights, photos};
use tch::{Device, Kind, Tensor};
use vephys_worker::image_io::{self, png_bytes};
use vephys_worker::models::Network;
use vephys_worker::synthesis::{
    synthesize, synthesize_pass, ColorMode, Status, SynthParams, STARTS,
};

fn lite0() -> Network {
    let mut net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
    net.load_weights(&lite0_weights()).unwrap();
    net
}

fn small(steps: i64, size: i64) -> SynthParams {
    SynthParams {
        steps,
        size,
        ..SynthParams::default()
    }
}

#[test]
fn same_seed_gives_identical_png_bytes() {
    let net = lite0();
    let layer = net.layer_index("blocks.4").unwrap();
    let p = small(12, 48);
    let run = || -> Vec<Vec<u8>> {
        synthesize(&net, layer, &[0, 5, 9], &p, &mut |_| {})
            .unwrap()
            .iter()
            .map(|o| png_bytes(&o.image).unwrap())
            .collect()
    };
    assert_eq!(run(), run());
    let other = synthesize(
        &net,
        layer,
        &[0],
        &SynthParams {
            seed: 7,
            ..p.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(
        png_bytes(&other[0].image).unwrap(),
        run()[0],
        "another seed must give another image"
    );
}

/// `synthesize` splits CPU batches into passes: the images are the passes' own, in the order of
/// the filters asked for, and progress counts every image-step once.
#[test]
fn synthesize_returns_every_filter_in_order_and_counts_every_image_step() {
    let net = lite0();
    let layer = net.layer_index("blocks.4").unwrap();
    let p = small(3, 48);
    let filters = [7i64, 2, 11];
    let mut counted = 0u64;
    let all = synthesize(&net, layer, &filters, &p, &mut |n| counted += n).unwrap();
    assert_eq!(counted, 3 * 3, "3 steps of 3 images");
    let order: Vec<i64> = all.iter().map(|o| o.filter).collect();
    assert_eq!(order, filters);
    let one = synthesize_pass(&net, layer, &[2], &p, &mut |_| {}).unwrap();
    assert_eq!(
        png_bytes(&all[1].image).unwrap(),
        png_bytes(&one[0].image).unwrap()
    );
    let Err(err) = synthesize(&net, layer, &[], &p, &mut |_| {}) else {
        panic!("an empty filter list must be refused");
    };
    assert!(err.to_string().contains("--filters"), "{err}");
}

/// Batching must not couple images: each image of a batch of 16 follows the same path as its
/// own run of batch 1. libtorch picks different conv kernels per batch size, so the two differ
/// by float reassociation (~1e-6 relative at step 0); gradient ascent with a normalised step
/// amplifies that ~6x per step, so the comparison covers the first steps, where any coupling
/// (a shared normalisation, a wrong index) would show at once as a large difference.
#[test]
fn a_batch_of_16_equals_16_runs_of_one() {
    let net = lite0();
    let layer = net.layer_index("blocks.4").unwrap();
    let p = small(2, 48);
    let filters: Vec<i64> = (0..16).map(|i| i * 2).collect();
    let batched = synthesize_pass(&net, layer, &filters, &p, &mut |_| {}).unwrap();
    for (i, &f) in filters.iter().enumerate() {
        let single = synthesize_pass(&net, layer, &[f], &p, &mut |_| {})
            .unwrap()
            .remove(0);
        assert_eq!(single.filter, f);
        for (a, b) in single.trajectory.iter().zip(&batched[i].trajectory) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
                "filter {f}: objective {a} vs {b}"
            );
        }
        // Mean over pixels, not max: a pre-activation within float noise of a ReLU6 kink can
        // flip one pixel's gradient and move that pixel by up to lr, without any coupling.
        let diff = (&single.image - &batched[i].image)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(
            diff < 1e-3,
            "filter {f}: batch and single differ by {diff} per pixel on average"
        );
        let rel = (single.mean_activity - batched[i].mean_activity).abs()
            / batched[i].mean_activity.abs().max(1e-6);
        assert!(
            rel < 1e-2,
            "filter {f}: activity {} vs {}",
            single.mean_activity,
            batched[i].mean_activity
        );
    }
}

#[test]
fn single_colour_synthesis_leaves_the_other_channels_exactly_zero() {
    let net = lite0();
    let layer = net.layer_index("blocks.2").unwrap();
    for (colour, keep) in [(ColorMode::R, 0), (ColorMode::G, 1), (ColorMode::B, 2)] {
        let p = SynthParams {
            color: colour,
            ..small(8, 32)
        };
        let out = synthesize(&net, layer, &[1, 3], &p, &mut |_| {}).unwrap();
        for o in &out {
            for c in 0..3 {
                let channel_max = o.image.get(c).max().double_value(&[]);
                if c == keep {
                    assert!(
                        channel_max > 0.0,
                        "{colour:?}: the optimised channel is empty"
                    );
                } else {
                    assert_eq!(
                        channel_max, 0.0,
                        "{colour:?}: channel {c} must stay exactly 0"
                    );
                }
            }
        }
    }
}

#[test]
fn a_unit_with_no_gradient_is_reported_dead() {
    let net = Network::build("vgg16", Device::Cpu).unwrap();
    // Filter 3 of the first conv: zero weights and a negative bias => ReLU output 0 everywhere.
    let params = net.parameters().unwrap();
    tch::no_grad(|| {
        let _ = params["features.0.weight"].get(3).zero_();
        let _ = params["features.0.bias"].get(3).fill_(-1.0);
    });
    let layer = net.layer_index("block1_conv1").unwrap();
    let out = synthesize(&net, layer, &[2, 3], &small(4, 16), &mut |_| {}).unwrap();
    assert_eq!(out[0].status, Status::Ok);
    assert_eq!(out[1].status, Status::Dead);
    assert_eq!(out[1].max_activity, 0.0);
    assert_eq!(
        (out[0].starts, out[1].starts),
        (1, STARTS),
        "every start tried"
    );
}

/// A unit silent on one seeded start image but not on another is not dead: a ReLU unit that
/// fires only where red exceeds a threshold t, with t between the reddest pixel of start 0 and
/// that of a later start, must be revived by the later start. Thresholds are swept (the start
/// images are the engine's), so the test finds such a t: every t below all starts' reddest
/// pixel is alive at once, every t above them dead after all starts, and some t in between
/// needs a second or third start.
#[test]
fn a_unit_is_dead_only_when_every_seeded_start_leaves_it_silent() {
    let net = Network::build("vgg16", Device::Cpu).unwrap();
    let params = net.parameters().unwrap();
    let layer = net.layer_index("block1_conv1").unwrap();
    let p = small(1, 16);
    // eight filters alike: each has its own start images, so some filter's first start is
    // not its reddest
    let filters: Vec<i64> = (0..8).collect();
    let mut outcomes: Vec<Vec<(u32, Status)>> = Vec::new();
    for k in 0..=80 {
        let t = 0.60 + 0.005 * f64::from(k);
        tch::no_grad(|| {
            for &f in &filters {
                // relu(R - t) at the centre of the 3x3 window, in pixel space: the network
                // normalises R as (R - 0.485) / 0.229 first
                let mut w = params["features.0.weight"].get(f);
                let _ = w.zero_();
                let _ = w.get(0).get(1).get(1).fill_(0.229);
                let _ = params["features.0.bias"].get(f).fill_(0.485 - t);
            }
        });
        let out = synthesize(&net, layer, &filters, &p, &mut |_| {}).unwrap();
        outcomes.push(out.iter().map(|o| (o.starts, o.status)).collect());
    }
    assert!(
        outcomes[0].iter().all(|o| o.0 == 1),
        "alive at once at t = 0.6: {outcomes:?}"
    );
    assert!(
        outcomes
            .last()
            .unwrap()
            .iter()
            .all(|o| *o == (STARTS, Status::Dead)),
        "dead after every start at t = 1, above any pixel: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .flatten()
            .any(|(starts, status)| *starts > 1 && *status == Status::Ok),
        "no threshold revived by a later start: {outcomes:?}"
    );
    // per filter, a higher threshold never needs fewer starts
    for w in outcomes.windows(2) {
        for (a, b) in w[0].iter().zip(&w[1]) {
            assert!(b.0 >= a.0, "{outcomes:?}");
        }
    }
}

#[test]
fn max_images_beat_every_natural_photo() {
    let net = lite0();
    let layer = net.layer_index("blocks.7").unwrap();
    let size = 128;
    let filters: Vec<i64> = (0..16).map(|i| i * 5).collect();
    let out = synthesize(&net, layer, &filters, &small(96, size), &mut |_| {}).unwrap();

    let index = Tensor::from_slice(&filters);
    for photo in photos() {
        let image = image_io::load(&photo, Some(size)).unwrap();
        let acts = tch::no_grad(|| net.forward_to(&image.unsqueeze(0), layer)).unwrap();
        let photo_means =
            acts.get(0)
                .index_select(0, &index)
                .mean_dim(&[1i64, 2][..], false, Kind::Double);
        let photo_means = Vec::<f64>::try_from(photo_means).unwrap();
        for (o, photo_mean) in out.iter().zip(photo_means) {
            assert_eq!(o.status, Status::Ok);
            assert!(
                o.mean_activity > photo_mean,
                "filter {}: max image mean activity {:.4} <= {:.4} on {}",
                o.filter,
                o.mean_activity,
                photo_mean,
                photo.display()
            );
        }
    }
    for o in &out {
        let first = o.trajectory[0];
        let last = *o.trajectory.last().unwrap();
        assert!(
            last > first,
            "filter {}: objective went {first} -> {last}",
            o.filter
        );
    }
}
