//! One figure per probe result, in the spirit of the paper's Figures 3-8: tuning curves of max
//! and mean activity (zoom on a log axis, rotation over a full turn, grating orientation and
//! frequency, hue with each point in its hue) and bar plots for the categorical probes (colour:
//! fifteen bars each in its stimulus' colour; baseline: five bars). The derived numbers
//! (docs/results.md) become the caption. Anything missing (a probe not run, a field null)
//! simply leaves out its figure or its number.

use std::collections::BTreeMap;

use serde_json::Value;
use vephys_proto::v1::{JobResult, TuningPoint};

use crate::fmt::num;
use crate::svg::{self, Bar, LinePlot, Series, XAxis, MAX_COLOUR, MEAN_COLOUR};
use crate::units::derived;

/// A plot and the derived numbers under it (plain text; the page escapes it).
pub struct Figure {
    /// The job's probe the figure shows (`zoom`, `grating`, ...): gratings make two figures.
    pub probe: String,
    pub svg: String,
    pub caption: String,
}

/// The order probes appear in on the page: the paper's, then the parametric ones.
const ORDER: [&str; 6] = ["zoom", "rotation", "color", "baseline", "grating", "hue"];

/// All figures of one unit, in page order. Unknown probes get a plain line plot so a newer
/// worker's results still show.
pub fn figures(probes: &BTreeMap<&str, &JobResult>) -> Vec<Figure> {
    let mut out = Vec::new();
    for probe in ORDER {
        if let Some(r) = probes.get(probe) {
            out.extend(tagged(probe, figures_of(probe, r)));
        }
    }
    for (probe, r) in probes {
        if *probe != "synthesis" && !ORDER.contains(probe) {
            out.extend(tagged(probe, figures_of(probe, r)));
        }
    }
    out
}

fn tagged(probe: &str, mut figures: Vec<Figure>) -> Vec<Figure> {
    for f in &mut figures {
        f.probe = probe.to_string();
    }
    figures
}

fn figures_of(probe: &str, r: &JobResult) -> Vec<Figure> {
    let d = derived(r);
    let pts: Vec<&TuningPoint> = r.points.iter().collect();
    match probe {
        "zoom" => {
            let mut caption = tuning_caption(&d, "", " octaves");
            push_str_field(&mut caption, &d, "fill", "fill");
            line("zoom", "zoom factor", XAxis::Log2, &pts, None, caption)
        }
        "rotation" => {
            let mut caption = tuning_caption(&d, "°", "°");
            push_num(
                &mut caption,
                "circular variance",
                d.get("circular_variance"),
                "",
            );
            push_num(
                &mut caption,
                "symmetry period",
                d.get("symmetry_period_deg"),
                "°",
            );
            push_num(
                &mut caption,
                "symmetry strength",
                d.get("symmetry_strength"),
                "",
            );
            let axis = XAxis::Linear(Some((0.0, 360.0, 90.0)));
            line(
                "rotation",
                "angle (degrees, counterclockwise)",
                axis,
                &pts,
                None,
                caption,
            )
        }
        "color" => {
            let mut caption = Vec::new();
            push_str_field(&mut caption, &d, "preferred_channel", "preferred channel");
            push_num(
                &mut caption,
                "its selectivity",
                d.get("preferred_channel_selectivity"),
                "",
            );
            let per_channel = |key: &str, what: &str, caption: &mut Vec<String>| {
                if let Some(sel) = d.get(key).and_then(Value::as_array) {
                    let parts: Vec<String> = ["r", "g", "b"]
                        .iter()
                        .zip(sel)
                        .map(|(c, v)| format!("{c} {}", v.as_f64().map_or_else(|| "-".into(), num)))
                        .collect();
                    caption.push(format!("{what} {}", parts.join(", ")));
                }
            };
            per_channel(
                "channel_selectivity_equal",
                "channel selectivity",
                &mut caption,
            );
            per_channel("channel_selectivity", "against luma gray", &mut caption);
            bars("colour", &pts, colour_of_stimulus, caption)
        }
        "baseline" => {
            let mut caption = Vec::new();
            push_num(&mut caption, "colour selectivity (csi)", d.get("csi"), "");
            bars("baseline", &pts, colour_of_baseline, caption)
        }
        "grating" => {
            let orientation: Vec<&TuningPoint> = pts
                .iter()
                .copied()
                .filter(|p| p.probe == "grating.orientation")
                .collect();
            let frequency: Vec<&TuningPoint> = pts
                .iter()
                .copied()
                .filter(|p| p.probe == "grating.frequency")
                .collect();
            let mut oc = d
                .get("orientation")
                .map(|t| tuning_caption(t, "°", "°"))
                .unwrap_or_default();
            push_num(&mut oc, "circular variance", d.get("circular_variance"), "");
            let fc = d
                .get("frequency")
                .map(|t| tuning_caption(t, " c/img", " octaves"))
                .unwrap_or_default();
            let axis = XAxis::Linear(Some((0.0, 180.0, 45.0)));
            let mut out = line(
                "grating orientation",
                "orientation (degrees)",
                axis,
                &orientation,
                None,
                oc,
            );
            out.extend(line(
                "grating frequency",
                "spatial frequency (cycles per image)",
                XAxis::Log2,
                &frequency,
                None,
                fc,
            ));
            out
        }
        "hue" => {
            let mut caption = tuning_caption(&d, "°", "°");
            push_num(
                &mut caption,
                "circular variance",
                d.get("circular_variance"),
                "",
            );
            let hues = pts
                .iter()
                .map(|p| format!("hsl({:.0},90%,45%)", p.x.rem_euclid(360.0)))
                .collect();
            let axis = XAxis::Linear(Some((0.0, 360.0, 90.0)));
            line(
                "hue",
                "hue angle (degrees)",
                axis,
                &pts,
                Some(hues),
                caption,
            )
        }
        other => {
            let caption = tuning_caption(&d, "", "");
            line(other, "stimulus", XAxis::Linear(None), &pts, None, caption)
        }
    }
}

/// A line plot of max (solid) and mean (dashed) activity; nothing without points.
fn line(
    title: &str,
    x_label: &str,
    axis: XAxis,
    pts: &[&TuningPoint],
    marker_colours: Option<Vec<String>>,
    caption: Vec<String>,
) -> Vec<Figure> {
    if pts.is_empty() {
        return Vec::new();
    }
    let plot = LinePlot {
        title,
        x_label,
        y_label: "activity",
        x_axis: axis,
        series: vec![
            Series {
                name: "max",
                colour: MAX_COLOUR,
                dashed: false,
                points: pts.iter().map(|p| (p.x, p.max_act)).collect(),
                marker_colours: marker_colours.clone(),
            },
            Series {
                name: "mean",
                colour: MEAN_COLOUR,
                dashed: true,
                points: pts.iter().map(|p| (p.x, p.mean_act)).collect(),
                marker_colours,
            },
        ],
    };
    vec![Figure {
        probe: String::new(),
        svg: svg::line_plot(&plot),
        caption: caption.join(" · "),
    }]
}

/// A bar plot of max activity per labelled stimulus, in stimulus order.
fn bars(
    title: &str,
    pts: &[&TuningPoint],
    colour: fn(&str) -> &'static str,
    caption: Vec<String>,
) -> Vec<Figure> {
    if pts.is_empty() {
        return Vec::new();
    }
    let bars: Vec<Bar> = pts
        .iter()
        .map(|p| {
            let label = p.label.clone().unwrap_or_else(|| num(p.x));
            Bar {
                colour: colour(&label).to_string(),
                label,
                max: p.max_act,
                mean: p.mean_act,
            }
        })
        .collect();
    vec![Figure {
        probe: String::new(),
        svg: svg::bar_plot(title, "activity", &bars),
        caption: caption.join(" · "),
    }]
}

const RED: &str = "rgb(214,39,40)";
const GREEN: &str = "rgb(44,160,44)";
const BLUE: &str = "rgb(31,90,220)";
const GRAY: &str = "rgb(150,150,150)";
const OTHER: &str = "rgb(110,110,110)";

/// The colour a colour-probe stimulus is shown in: `r` red, `r_as_g` green (the red max image
/// moved into the green channel), `r_gray` gray.
fn colour_of_stimulus(label: &str) -> &'static str {
    let shown = if label.ends_with("_gray") || label.ends_with("_equal") {
        return GRAY;
    } else if let Some((_, to)) = label.split_once("_as_") {
        to
    } else {
        label
    };
    match shown {
        "r" => RED,
        "g" => GREEN,
        "b" => BLUE,
        _ => OTHER,
    }
}

/// Baseline stimuli: the full-colour max image (twice), its grayscale, white and noise.
fn colour_of_baseline(label: &str) -> &'static str {
    match label {
        "max_image" => "rgb(128,90,180)",
        "max_image_aperture" => "rgb(178,160,214)",
        "grayscale" => GRAY,
        "white" => "rgb(240,240,240)",
        "noise" => "rgb(80,80,80)",
        _ => OTHER,
    }
}

/// The caption of a tuning object: preferred value, bandwidth, peak/mean, and "flat".
fn tuning_caption(t: &Value, unit: &str, bandwidth_unit: &str) -> Vec<String> {
    let mut out = Vec::new();
    push_num(&mut out, "preferred", t.get("preferred"), unit);
    push_num(
        &mut out,
        "bandwidth (FWHM)",
        t.get("bandwidth"),
        bandwidth_unit,
    );
    push_num(&mut out, "peak/mean", t.get("peak_to_mean"), "");
    if t.get("flat").and_then(Value::as_bool) == Some(true) {
        out.push("flat (no tuning)".into());
    }
    out
}

fn push_num(out: &mut Vec<String>, name: &str, v: Option<&Value>, unit: &str) {
    if let Some(v) = v.and_then(Value::as_f64) {
        out.push(format!("{name} {}{unit}", num(v)));
    }
}

fn push_str_field(out: &mut Vec<String>, d: &Value, key: &str, name: &str) {
    if let Some(v) = d.get(key).and_then(Value::as_str) {
        out.push(format!("{name} {v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_stimuli_are_drawn_in_the_colour_shown() {
        assert_eq!(colour_of_stimulus("r"), RED);
        assert_eq!(colour_of_stimulus("r_as_g"), GREEN);
        assert_eq!(colour_of_stimulus("g_as_b"), BLUE);
        assert_eq!(colour_of_stimulus("b_gray"), GRAY);
    }

    #[test]
    fn captions_skip_nulls() {
        let t: Value = serde_json::json!({"preferred": 90.0, "bandwidth": null, "flat": false});
        assert_eq!(
            tuning_caption(&t, "°", "°"),
            vec!["preferred 90°".to_string()]
        );
    }
}
