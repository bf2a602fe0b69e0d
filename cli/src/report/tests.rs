//! The report against hand-built results: a layer's units with a fully probed filter, a dead
//! unit, a unit missing probes and one with no synthesis at all, plus real (tiny) PNG bytes
//! served by an in-memory fetch.

// proto messages gain fields over time; `..Default::default()` keeps these literals compiling
#![allow(clippy::needless_update)]

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use vephys_proto::v1::{Artifact, Campaign, JobOutcome, JobResult, TuningPoint};

use super::units::format_table;
use super::*;

/// A real 2x2 RGB PNG of one colour.
fn tiny_png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 2, 2);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&rgb.repeat(4)).unwrap();
    writer.finish().unwrap();
    out
}

/// Artifacts and the bytes `fetch` serves for them, by URI.
#[derive(Default)]
struct Store {
    objects: HashMap<String, Vec<u8>>,
}

impl Store {
    fn put(&mut self, key: &str, kind: &str, bytes: Vec<u8>) -> Artifact {
        let uri = format!("mem://{key}/{kind}.png");
        let a = Artifact {
            kind: kind.into(),
            uri: uri.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            ..Default::default()
        };
        self.objects.insert(uri, bytes);
        a
    }

    fn fetch(&self, a: &Artifact) -> anyhow::Result<Vec<u8>> {
        self.objects
            .get(&a.uri)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no object {}", a.uri))
    }
}

fn point(probe: &str, x: f64, label: Option<&str>, max: f64, mean: f64) -> TuningPoint {
    TuningPoint {
        probe: probe.into(),
        x,
        label: label.map(Into::into),
        max_act: max,
        mean_act: mean,
        ..Default::default()
    }
}

// one argument per field the tests vary; a builder would only hide them
#[allow(clippy::too_many_arguments)]
fn result(
    layer: &str,
    filter: i64,
    probe: &str,
    status: &str,
    max_act: f64,
    derived: serde_json::Value,
    points: Vec<TuningPoint>,
    artifacts: Vec<Artifact>,
) -> JobResult {
    JobResult {
        job_id: filter * 100 + probe.len() as i64,
        layer: layer.into(),
        filter,
        probe: probe.into(),
        result: Some(JobOutcome {
            max_act,
            mean_act: max_act / 2.0,
            status: status.into(),
            derived_json: derived.to_string(),
            ..Default::default()
        }),
        points,
        artifacts,
        attempt: 1,
        ..Default::default()
    }
}

fn campaign(name: &str) -> Campaign {
    Campaign {
        id: 7,
        name: name.into(),
        model: "vgg19".into(),
        state: "succeeded".into(),
        created_at_ms: 1_709_210_096_000,
        spec_toml: format!("name = \"{name}\"\nmodel = \"vgg19\"\n"),
        ..Default::default()
    }
}

const LAYER: &str = "block3_pool";
const COLOR_LABELS: [&str; 12] = [
    "r", "r_as_g", "r_as_b", "r_gray", "g", "g_as_r", "g_as_b", "g_gray", "b", "b_as_r", "b_as_g",
    "b_gray",
];
const BASELINE_LABELS: [&str; 5] = [
    "max_image",
    "max_image_aperture",
    "grayscale",
    "white",
    "noise",
];

/// Filter 0: every probe. Filter 1: dead. Filter 3: synthesis and zoom only (the rotation and
/// colour probes are missing). Filter 5: a hue job but no synthesis result.
fn campaign_results(store: &mut Store) -> Vec<JobResult> {
    let mut out = Vec::new();
    let max0 = store.put("f0/synthesis", "max_image", tiny_png([200, 10, 10]));
    out.push(result(
        LAYER,
        0,
        "synthesis",
        "ok",
        12.5,
        json!({"steps": 64, "objective_first": 0.1, "objective_last": 5.0}),
        vec![],
        vec![max0, store.put("f0/synthesis", "record", b"{}".to_vec())],
    ));
    let zoom_x = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0];
    let zoom_y = [1.0, 2.0, 3.0, 5.0, 9.0, 6.0, 2.0, 1.0];
    out.push(result(
        LAYER,
        0,
        "zoom",
        "ok",
        9.0,
        json!({"preferred": 1.5, "peak": 9.0, "peak_to_mean": 2.0, "bandwidth": 1.2, "flat": false,
               "mean": {"preferred": 1.5}, "fill": "tile"}),
        zoom_x
            .iter()
            .zip(zoom_y)
            .map(|(&x, y)| point("zoom", x, None, y, y / 3.0))
            .collect(),
        vec![],
    ));
    // a tie at 90 and 270 degrees: the first stimulus wins, as in the tuning_peaks view
    let rotation = (0..36)
        .map(|k| {
            let x = k as f64 * 10.0;
            let y = if k == 9 || k == 27 {
                8.0
            } else {
                2.0 + (k % 5) as f64 * 0.1
            };
            point("rotation", x, None, y, y / 4.0)
        })
        .collect();
    out.push(result(
        LAYER,
        0,
        "rotation",
        "ok",
        8.0,
        json!({"preferred": 90.0, "peak": 8.0, "peak_to_mean": 3.1, "bandwidth": null, "flat": false,
               "circular_variance": 0.4, "symmetry_period_deg": 180.0}),
        rotation,
        vec![],
    ));
    let color_points = COLOR_LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| point("color", i as f64, Some(l), 10.0 - i as f64 * 0.5, 2.0))
        .collect();
    let color_artifacts = vec![
        store.put("f0/color", "max_image_r", tiny_png([255, 0, 0])),
        store.put("f0/color", "max_image_g", tiny_png([0, 255, 0])),
        store.put("f0/color", "max_image_b", tiny_png([0, 0, 255])),
    ];
    out.push(result(
        LAYER,
        0,
        "color",
        "ok",
        10.0,
        json!({"preferred_channel": "r", "preferred_channel_selectivity": 0.2,
               "channel_selectivity": [0.2, 0.1, null], "channel_selectivity_equal": [0.25, 0.05, null]}),
        color_points,
        color_artifacts,
    ));
    let baseline_points = BASELINE_LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| point("baseline", i as f64, Some(l), 5.0 - i as f64, 1.0))
        .collect();
    out.push(result(
        LAYER,
        0,
        "baseline",
        "ok",
        5.0,
        json!({"csi": 0.42}),
        baseline_points,
        vec![],
    ));
    let mut grating: Vec<TuningPoint> = (0..12)
        .map(|k| {
            point(
                "grating.orientation",
                k as f64 * 15.0,
                None,
                1.0 + (k == 4) as i32 as f64,
                0.5,
            )
        })
        .collect();
    grating.extend(
        [2.0, 4.0, 8.0, 16.0, 32.0].map(|f| point("grating.frequency", f, None, 8.0 / f, 0.2)),
    );
    out.push(result(
        LAYER,
        0,
        "grating",
        "ok",
        4.0,
        json!({"orientation": {"preferred": 60.0, "peak": 2.0, "peak_to_mean": 1.8, "bandwidth": 20.0, "flat": false},
               "frequency": {"preferred": 2.0, "peak": 4.0, "peak_to_mean": 2.5, "bandwidth": null, "flat": false},
               "circular_variance": 0.7}),
        grating,
        vec![],
    ));
    out.push(result(
        LAYER,
        0,
        "hue",
        "ok",
        3.0,
        json!({"preferred": 120.0, "peak": 3.0, "peak_to_mean": 1.2, "bandwidth": 60.0, "flat": false, "circular_variance": 0.2}),
        (0..36).map(|k| point("hue", k as f64 * 10.0, None, 1.0 + (k == 12) as i32 as f64 * 2.0, 0.5)).collect(),
        vec![],
    ));

    out.push(result(
        LAYER,
        1,
        "synthesis",
        "dead_unit",
        0.0,
        json!({"steps": 64}),
        vec![],
        vec![],
    ));

    let max3 = store.put("f3/synthesis", "max_image", tiny_png([10, 200, 10]));
    out.push(result(
        LAYER,
        3,
        "synthesis",
        "ok",
        3.25,
        json!({}),
        vec![],
        vec![max3],
    ));
    out.push(result(
        LAYER,
        3,
        "zoom",
        "ok",
        4.0,
        json!({"preferred": 0.5, "bandwidth": null, "flat": false}),
        [(0.25, 3.0), (0.5, 4.0), (1.0, 4.0), (2.0, 1.0)]
            .iter()
            .map(|&(x, y)| point("zoom", x, None, y, 1.0))
            .collect(),
        vec![],
    ));

    out.push(result(
        LAYER,
        5,
        "hue",
        "ok",
        1.0,
        json!({"preferred": 0.0, "flat": true}),
        (0..4)
            .map(|k| point("hue", k as f64 * 90.0, None, 1.0, 1.0))
            .collect(),
        vec![],
    ));
    out
}

fn svgs(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end =
            rest[start..].find("</svg>").expect("every <svg> is closed") + start + "</svg>".len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

fn staging_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vephys-report"))
        .collect()
}

#[test]
fn units_pick_preferred_values_and_statuses() {
    let mut store = Store::default();
    let mut results = campaign_results(&mut store);
    // order of arrival does not matter
    results.reverse();
    let units = units(&results);
    let key: Vec<(&str, i64, &str)> = units
        .iter()
        .map(|u| (u.layer.as_str(), u.filter, u.status.as_str()))
        .collect();
    assert_eq!(
        key,
        vec![
            (LAYER, 0, "ok"),
            (LAYER, 1, "dead_unit"),
            (LAYER, 3, "ok"),
            (LAYER, 5, "missing")
        ]
    );
    let f0 = &units[0];
    assert_eq!(f0.max_act, Some(12.5));
    assert_eq!(
        f0.preferred_rotation,
        Some(90.0),
        "ties go to the first stimulus"
    );
    assert_eq!(f0.preferred_zoom, Some(1.5));
    assert_eq!(f0.csi, Some(0.42));
    assert_eq!(f0.preferred_channel.as_deref(), Some("r"));
    let f3 = &units[2];
    assert_eq!(f3.preferred_zoom, Some(0.5), "first of two equal peaks");
    assert_eq!(
        (
            f3.preferred_rotation,
            f3.csi,
            f3.preferred_channel.as_deref()
        ),
        (None, None, None)
    );
    assert_eq!(units[1].max_act, Some(0.0));
    assert_eq!(units[3].max_act, None);

    let table = format_table(&units);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 4);
    assert!(lines[0].starts_with("layer") && lines[0].contains("pref. rotation (deg)"));
    assert!(
        lines[2].contains("12.5")
            && lines[2].contains("0.42")
            && lines[2].trim_end().ends_with('r')
    );
    // the missing unit shows "-" for every number
    assert_eq!(lines[5].matches(" -").count(), 5, "{}", lines[5]);
    // columns line up: every row is as wide as the rule up to its last column
    let width = lines[1].rfind('-').unwrap();
    assert!(lines.iter().all(|l| l.len() > width - 8));
}

#[test]
fn report_has_every_unit_its_images_and_wellformed_plots() {
    let mut store = Store::default();
    let results = campaign_results(&mut store);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("report");
    let index = write_report(&dir, &campaign("vgg19 block3"), &results, &|a| {
        store.fetch(a)
    })
    .unwrap();
    assert_eq!(index, dir.join("index.html"));
    let html = std::fs::read_to_string(&index).unwrap();

    for f in [0, 1, 3, 5] {
        assert!(
            html.contains(&format!("id=\"u-block3_pool-{f:04}\"")),
            "section of filter {f}"
        );
    }
    assert!(html.contains("dead unit"), "the dead unit says so");
    assert!(html.contains("no synthesis result"));
    assert!(
        html.contains("2024-02-29 12:34 UTC")
            && html.contains("succeeded")
            && html.contains("vgg19")
    );
    // the SVG namespace is a name, not a link
    let links = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !links.contains("http://") && !links.contains("https://"),
        "no external URLs"
    );
    assert!(!html.contains("<script"), "no scripts");

    let images = dir.join("images");
    let expect = [
        (
            "block3_pool_filter_0000.png",
            "mem://f0/synthesis/max_image.png",
        ),
        (
            "block3_pool_filter_0000_r.png",
            "mem://f0/color/max_image_r.png",
        ),
        (
            "block3_pool_filter_0000_g.png",
            "mem://f0/color/max_image_g.png",
        ),
        (
            "block3_pool_filter_0000_b.png",
            "mem://f0/color/max_image_b.png",
        ),
        (
            "block3_pool_filter_0003.png",
            "mem://f3/synthesis/max_image.png",
        ),
    ];
    for (file, uri) in expect {
        assert_eq!(
            std::fs::read(images.join(file)).unwrap(),
            store.objects[uri],
            "{file}"
        );
        assert!(
            html.contains(&format!("src=\"images/{file}\"")),
            "{file} is shown"
        );
    }
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        expect.len(),
        "no image for the dead or missing unit, no record"
    );

    // filter 0: zoom, rotation, colour, baseline, grating x2, hue; filter 3: zoom; filter 5: hue
    let svgs = svgs(&html);
    assert_eq!(svgs.len(), 7 + 1 + 1);
    for svg in &svgs {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
    }
    // twelve colour bars, each in its stimulus' colour; five baseline bars
    let colour = svgs
        .iter()
        .find(|s| s.contains("aria-label=\"colour\""))
        .unwrap();
    assert_eq!(colour.matches("<rect x=").count(), 12);
    assert!(colour.contains("rgb(214,39,40)") && colour.contains("rgb(150,150,150)"));
    let baseline = svgs
        .iter()
        .find(|s| s.contains("aria-label=\"baseline\""))
        .unwrap();
    assert_eq!(baseline.matches("<rect x=").count(), 5);
    // hue points are coloured by hue; the zoom axis is logarithmic (ticks at powers of two)
    assert!(html.contains("hsl(120,90%,45%)"));
    let zoom = svgs
        .iter()
        .find(|s| s.contains("aria-label=\"zoom\"") && s.contains(">0.25<"))
        .unwrap();
    assert!(zoom.contains(">2<") && !zoom.contains(">1.5<"));
    // derived numbers as captions
    for caption in [
        "symmetry period 180°",
        "preferred 90°",
        "colour selectivity (csi) 0.42",
        "preferred channel r",
        "channel selectivity r 0.25, g 0.05, b -",
        "against luma gray r 0.2, g 0.1, b -",
        "fill tile",
        "flat (no tuning)",
    ] {
        assert!(html.contains(caption), "caption {caption}");
    }
    assert!(staging_dirs(&dir).is_empty());

    // writing again over the same directory replaces the page and leaves no staging behind
    let again = write_report(&dir, &campaign("second"), &results, &|a| store.fetch(a)).unwrap();
    assert!(std::fs::read_to_string(again)
        .unwrap()
        .contains("<h1>second</h1>"));
    assert!(staging_dirs(&dir).is_empty());
}

#[test]
fn a_corrupt_image_is_an_error_and_writes_no_page() {
    let mut store = Store::default();
    let results = campaign_results(&mut store);
    // the object changed after the worker recorded its hash
    store.objects.insert(
        "mem://f3/synthesis/max_image.png".into(),
        tiny_png([1, 2, 3]),
    );
    let tmp = tempfile::tempdir().unwrap();
    let fetched = Cell::new(0);
    let fetch = |a: &Artifact| {
        fetched.set(fetched.get() + 1);
        store.fetch(a)
    };
    let err = write_report(tmp.path(), &campaign("c"), &results, &fetch).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("sha256")
            && msg.contains("filter 3")
            && msg.contains("mem://f3/synthesis/max_image.png"),
        "{msg}"
    );
    assert!(!tmp.path().join("index.html").exists());
    assert!(
        !tmp.path().join("images").exists(),
        "nothing moved into place"
    );
    assert!(
        staging_dirs(tmp.path()).is_empty(),
        "the staging directory is cleaned up"
    );
    assert!(fetched.get() >= 1);

    // a fetch error is reported with the artifact, too
    let err = write_report(tmp.path(), &campaign("c"), &results, &|_| {
        anyhow::bail!("connection refused")
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("connection refused"));
    assert!(!tmp.path().join("index.html").exists());
}

#[test]
fn strings_from_data_are_escaped() {
    let mut store = Store::default();
    let mut results = campaign_results(&mut store);
    // a layer name and a stimulus label with markup in them
    for r in &mut results {
        if r.filter == 3 {
            r.layer = "conv<b>\"1\"".into();
        }
        for p in &mut r.points {
            if p.label.as_deref() == Some("noise") {
                p.label = Some("<noise&>".into());
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let index = write_report(
        tmp.path(),
        &campaign("<script>alert(1)</script>"),
        &results,
        &|a| store.fetch(a),
    )
    .unwrap();
    let html = std::fs::read_to_string(index).unwrap();
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("conv<b>") && html.contains("conv&lt;b&gt;&quot;1&quot;"));
    assert!(html.contains("&lt;noise&amp;&gt;") && !html.contains("<noise"));
    for svg in svgs(&html) {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    }
    // the odd layer's image got a safe file name
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("conv_b__1_-") && n.ends_with("_filter_0003.png")),
        "{names:?}"
    );
}

#[test]
fn an_empty_campaign_still_gets_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let index = write_report(tmp.path(), &campaign("empty"), &[], &|_| unreachable!()).unwrap();
    assert!(std::fs::read_to_string(index)
        .unwrap()
        .contains("<h1>empty</h1>"));
}

#[test]
fn tiny_png_is_a_png() {
    let png = tiny_png([1, 2, 3]);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// Writes the test campaign's report to $VEPHYS_REPORT_SAMPLE_DIR for a person to look at:
/// `VEPHYS_REPORT_SAMPLE_DIR=/tmp/r cargo test -p vephys-cli --bin vephys sample -- --ignored`
#[test]
#[ignore]
fn write_a_sample_report() {
    let dir = std::env::var_os("VEPHYS_REPORT_SAMPLE_DIR").expect("set VEPHYS_REPORT_SAMPLE_DIR");
    let mut store = Store::default();
    let results = campaign_results(&mut store);
    let index = write_report(Path::new(&dir), &campaign("sample"), &results, &|a| {
        store.fetch(a)
    })
    .unwrap();
    print_table(&units(&results));
    println!("{}", index.display());
}
