//! The probes against units with known kernels (tests/known_units): each "Shows" item of the
//! probes issue, with the network built in code.

mod common;
mod known_units;

use known_units::{
    grating, network, CENTRE_SURROUND, EDGE, EDGE_ORIENTATION, GREEN, PERIOD, PERIOD_PX,
};
use tch::{Device, Kind, Tensor};
use vephys_worker::models::Network;
use vephys_worker::probes::{
    baseline, color, grating as grating_probe, measure, rotation, stimuli, zoom, MaxImage,
    ProbeParams, Responses,
};
use vephys_worker::synthesis::{synthesize, ColorMode, SynthOutcome, SynthParams};

const SIZE: i64 = 64;

fn params() -> ProbeParams {
    let mut p = ProbeParams::default();
    p.grating.spatial_frequencies = Some(vec![2.0, 4.0, 6.0, 8.0, 12.0, 16.0]);
    p
}

/// The filters' syntheses at SIZE px with only the channels of `color` free.
fn syntheses(net: &Network, filters: &[i64], color: ColorMode) -> Vec<SynthOutcome> {
    let p = SynthParams {
        steps: 96,
        size: SIZE,
        color,
        ..SynthParams::default()
    };
    let layer = net.layer_index("relu").unwrap();
    synthesize(net, layer, filters, &p, &mut |_| {}).unwrap()
}

/// Their max images, with the responses to them left for the probes to measure.
fn max_images(net: &Network, filters: &[i64], color: ColorMode) -> Vec<MaxImage> {
    syntheses(net, filters, color)
        .into_iter()
        .map(|o| MaxImage::new(o.image))
        .collect()
}

fn ratio(r: &[f64]) -> f64 {
    let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = r.iter().copied().fold(f64::INFINITY, f64::min);
    max / min
}

/// Angle distance on a circle of `period` degrees.
fn angle_gap(a: f64, b: f64, period: f64) -> f64 {
    let d = (a - b).rem_euclid(period);
    d.min(period - d)
}

#[test]
fn oriented_edge_unit_peaks_at_its_orientation_every_180_degrees_and_gratings_agree() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let p = params();

    // A vertical-stripe (0 degree) grating turned through every angle: the unit answers most
    // when the stripes reach its own orientation, and again half a turn later.
    let reference = grating(SIZE, 0.0, PERIOD_PX);
    let rot = rotation::run(&net, layer, &[EDGE], &[MaxImage::new(reference)], &p)
        .unwrap()
        .remove(0);
    for (stat, tuning, period) in [
        ("max", &rot.curve.tuning.max, rot.symmetry_period_deg.max),
        ("mean", &rot.curve.tuning.mean, rot.symmetry_period_deg.mean),
    ] {
        assert!(
            angle_gap(tuning.preferred, EDGE_ORIENTATION, 180.0) < 1e-9,
            "{stat}: preferred {}",
            tuning.preferred
        );
        assert_eq!(period, Some(180.0), "{stat}");
    }
    let mean = &rot.curve.responses.mean;
    for k in 0..12 {
        let (a, b) = (mean[k], mean[k + 12]);
        assert!(
            (a - b).abs() <= 0.05 * a.max(b).max(1e-9),
            "{k}: {a} vs {b}"
        );
    }
    assert!(rot.orientation_circular_variance.mean.unwrap() < 0.5);

    // Gratings find the same orientation (and the kernel's spatial frequency).
    let g = grating_probe::run(&net, layer, &[EDGE], SIZE, &p)
        .unwrap()
        .remove(0);
    assert_eq!(g.orientation.tuning.mean.preferred, EDGE_ORIENTATION);
    assert_eq!(g.orientation.tuning.max.preferred, EDGE_ORIENTATION);
    assert_eq!(g.frequency.tuning.mean.preferred, SIZE as f64 / PERIOD_PX);
    assert!(g.orientation_circular_variance.mean.unwrap() < 0.5);

    // Its own max image is already at the preferred orientation: peaks at 0 and 180.
    let image = max_images(&net, &[EDGE], ColorMode::Rgb).remove(0);
    let own = rotation::run(&net, layer, &[EDGE], &[image], &p)
        .unwrap()
        .remove(0);
    assert!(angle_gap(own.curve.tuning.mean.preferred, 0.0, 180.0) < 1e-9);
    assert_eq!(own.symmetry_period_deg.mean, Some(180.0));
}

#[test]
fn centre_surround_unit_has_a_flat_rotation_curve() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let image = max_images(&net, &[CENTRE_SURROUND], ColorMode::Rgb).remove(0);
    let rot = rotation::run(&net, layer, &[CENTRE_SURROUND], &[image], &params())
        .unwrap()
        .remove(0);
    let r = &rot.curve.responses;
    assert!(ratio(&r.mean) <= 1.05, "mean: {:?}", r.mean);
    assert!(ratio(&r.max) <= 1.05, "max: {:?}", r.max);
    assert!(rot.curve.tuning.mean.flat);
    assert_eq!(rot.symmetry_period_deg.mean, None);
}

#[test]
fn green_unit_prefers_green_and_loses_to_grayscale() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let single: [MaxImage; 3] =
        [ColorMode::R, ColorMode::G, ColorMode::B].map(|c| max_images(&net, &[GREEN], c).remove(0));
    let c = color::run(&net, layer, &[GREEN], &[single], &params())
        .unwrap()
        .remove(0);
    assert_eq!(c.preferred_channel.mean, "g");
    assert_eq!(c.preferred_channel.max, "g");
    let at = |label: &str| c.stimuli.iter().position(|s| s == label).unwrap();
    let r = &c.responses.mean;
    assert!(r[at("g_gray")] < r[at("g")], "{r:?}");
    // the green pattern moved into red or blue reaches a unit that reads only green not at all
    assert_eq!(r[at("g_as_r")], 0.0);
    assert_eq!(r[at("g_as_b")], 0.0);
    // gray keeps 0.587 of the green channel: (1 - 0.587) / (1 + 0.587) for a linear unit; the
    // same green values in all three channels drive a green-only unit as much as green alone:
    // the control without the luma bias reads 0
    let luma = c.channel_selectivity.mean[1].unwrap();
    assert!(
        (luma - 0.413 / 1.587).abs() < 0.02,
        "channel_selectivity {luma}"
    );
    let equal = c.channel_selectivity_equal.mean[1].unwrap();
    assert!(equal.abs() < 0.02, "channel_selectivity_equal {equal}");
    assert_eq!(r[at("g_equal")], r[at("g")]);

    // the full-colour max image loses to its grayscale too
    let rgb = max_images(&net, &[GREEN], ColorMode::Rgb);
    let b = baseline::run(&net, layer, &[GREEN], &rgb, &params())
        .unwrap()
        .remove(0);
    assert!(b.responses.mean[2] < b.responses.mean[0]);
    assert!(b.colour_selectivity_index.mean.unwrap() > 0.1);
}

#[test]
fn spatial_period_unit_peaks_where_the_period_matches() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let p = params();
    let g = grating_probe::run(&net, layer, &[PERIOD], SIZE, &p)
        .unwrap()
        .remove(0);
    assert_eq!(g.frequency.tuning.mean.preferred, SIZE as f64 / PERIOD_PX);
    assert_eq!(g.frequency.tuning.max.preferred, SIZE as f64 / PERIOD_PX);
    assert_eq!(g.orientation.tuning.mean.preferred, 0.0);
    assert!(g.frequency.tuning.mean.bandwidth.unwrap() < 3.0);

    // A grating of half the unit's period needs zoom 2 to match it.
    let fine = grating(SIZE, 0.0, PERIOD_PX / 2.0);
    let z = zoom::run(&net, layer, &[PERIOD], &[MaxImage::new(fine)], &p)
        .unwrap()
        .remove(0);
    assert_eq!(z.curve.tuning.mean.preferred, 2.0);
    assert_eq!(z.curve.tuning.max.preferred, 2.0);
}

#[test]
fn rotation_zero_and_zoom_one_equal_the_unrotated_max_image() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let p = params();
    let filters = [EDGE, CENTRE_SURROUND, GREEN, PERIOD];
    let images = max_images(&net, &filters, ColorMode::Rgb);
    let base = baseline::run(&net, layer, &filters, &images, &p).unwrap();
    let zooms = zoom::run(&net, layer, &filters, &images, &p).unwrap();
    let rots = rotation::run(&net, layer, &filters, &images, &p).unwrap();
    let one = p.zoom.factors.iter().position(|z| *z == 1.0).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1e-6);
    for (i, &f) in filters.iter().enumerate() {
        let x = images[i].image.unsqueeze(0);
        let direct = measure(&net, layer, &x, &[f], 1).unwrap().remove(0);
        let through_aperture = measure(
            &net,
            layer,
            &stimuli::aperture(&x, p.rotation.aperture).unwrap(),
            &[f],
            1,
        )
        .unwrap()
        .remove(0);
        // the baseline runs the filters' own stimuli together: each filter gets its own
        let gray = measure(&net, layer, &stimuli::grayscale(&x).unwrap(), &[f], 1)
            .unwrap()
            .remove(0);
        for (stat, d, a, g, z, r, b) in [
            (
                "max",
                direct.max[0],
                through_aperture.max[0],
                gray.max[0],
                &zooms[i].curve.responses.max,
                &rots[i].curve.responses.max,
                &base[i].responses.max,
            ),
            (
                "mean",
                direct.mean[0],
                through_aperture.mean[0],
                gray.mean[0],
                &zooms[i].curve.responses.mean,
                &rots[i].curve.responses.mean,
                &base[i].responses.mean,
            ),
        ] {
            assert!(
                close(b[2], g),
                "filter {f} {stat}: grayscale {} vs {g}",
                b[2]
            );
            assert!(
                close(z[one], d),
                "filter {f} {stat}: zoom 1 {} vs {d}",
                z[one]
            );
            assert!(
                close(b[0], d),
                "filter {f} {stat}: baseline {} vs {d}",
                b[0]
            );
            assert!(
                close(r[0], a),
                "filter {f} {stat}: rotation 0 {} vs {a}",
                r[0]
            );
            assert!(
                close(b[1], a),
                "filter {f} {stat}: aperture {} vs {a}",
                b[1]
            );
        }
    }
}

/// A max image's response as its synthesis measured it stands in for running the image again
/// (the baseline's `max_image`, zoom 1, the color probe's "as is"): the curves come out the
/// same as when the probes measure everything, so the synthesis measured the very image the
/// probes see, in the same way, and each known response lands at its own stimulus.
#[test]
fn responses_measured_by_the_synthesis_stand_in_for_the_max_image() {
    let net = network();
    let layer = net.layer_index("relu").unwrap();
    let p = params();
    let filters = [EDGE, CENTRE_SURROUND, GREEN, PERIOD];
    let outcomes = syntheses(&net, &filters, ColorMode::Rgb);
    let known: Vec<MaxImage> = outcomes.iter().map(MaxImage::synthesized).collect();
    let measured: Vec<MaxImage> = outcomes
        .iter()
        .map(|o| MaxImage::new(o.image.shallow_clone()))
        .collect();
    let same = |what: &str, a: &Responses, b: &Responses| {
        assert_eq!(a.max.len(), b.max.len(), "{what}");
        for (x, y) in a.max.iter().zip(&b.max).chain(a.mean.iter().zip(&b.mean)) {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1e-6),
                "{what}: {x} vs {y}\n{a:?}\n{b:?}"
            );
        }
    };
    let base = |images: &[MaxImage]| baseline::run(&net, layer, &filters, images, &p).unwrap();
    for (k, m) in base(&known).iter().zip(base(&measured)) {
        same("baseline", &k.responses, &m.responses);
    }
    let zooms = |images: &[MaxImage]| zoom::run(&net, layer, &filters, images, &p).unwrap();
    for (k, m) in zooms(&known).iter().zip(zooms(&measured)) {
        same("zoom", &k.curve.responses, &m.curve.responses);
    }

    let single =
        [ColorMode::R, ColorMode::G, ColorMode::B].map(|c| syntheses(&net, &[GREEN], c).remove(0));
    let c = |images: [MaxImage; 3]| {
        color::run(&net, layer, &[GREEN], &[images], &p)
            .unwrap()
            .remove(0)
            .responses
    };
    let known = c(single.each_ref().map(MaxImage::synthesized));
    let measured = c(single
        .each_ref()
        .map(|o| MaxImage::new(o.image.shallow_clone())));
    same("color", &known, &measured);
}

/// What the probes measure with, `forward_to_channels` (only the probed filters of the last
/// convolution; images with a uniform surround, like the rotation probe's, run only where they
/// differ from it), gives the full forward pass's values on the real networks, for stimuli
/// with and without a uniform surround.
#[test]
fn narrowed_forward_equals_the_full_forward_on_vgg19_and_efficientnet() {
    let cases: [(&str, std::path::PathBuf, &[&str], i64); 2] = [
        (
            "vgg19",
            common::fixtures().join("vgg19.safetensors"),
            &[
                "block3_pool",
                "block3_conv4",
                "features.16",
                "block1_conv1",
                "logits",
            ],
            64,
        ),
        (
            "efficientnet_lite0",
            common::lite0_weights(),
            &["blocks.4", "stem", "head", "logits"],
            96,
        ),
    ];
    let p = ProbeParams::default();
    let filters = [3i64, 0, 7];
    let index = Tensor::from_slice(&filters);
    for (model, weights, layers, size) in cases {
        let mut net = Network::build(model, Device::Cpu).unwrap();
        net.load_weights(&weights).unwrap();
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::rand([3, size, size], opts);
        let angles: Vec<f64> = (0..6).map(|k| 25.0 * k as f64).collect();
        let batches = [
            ("random images", Tensor::rand([5, 3, size, size], opts)),
            (
                "rotations through the aperture",
                stimuli::rotations(&image, &angles, p.rotation.aperture).unwrap(),
            ),
        ];
        for layer in layers {
            let l = net.layer_index(layer).unwrap();
            for (what, x) in &batches {
                let full = tch::no_grad(|| net.forward_to(x, l).unwrap().index_select(1, &index));
                let fast = net.forward_to_channels(x, l, &filters).unwrap();
                assert_eq!(fast.size(), full.size(), "{model} {layer} {what}");
                // channels-last and channels-first convolutions round differently; over the 17
                // stages up to EfficientNet's `head` the two differ by up to 1.1e-5 on random
                // images (a wrong channel or frame is off by far more)
                let err = common::rel_err(&fast, &full);
                assert!(
                    err <= 2e-5,
                    "{model} {layer} {what}: relative error {err:e}"
                );
            }
        }
    }
}
