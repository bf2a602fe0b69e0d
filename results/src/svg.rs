//! Inline SVG plots: line plots (tuning curves over a linear or log2 axis) and bar plots
//! (categorical stimuli). No plotting library: the static report must be one self-contained
//! file with no scripts, the results browser draws the same SVG on the server, and the figures
//! are simple enough that drawing them by hand keeps them exact.
//!
//! Every string that reaches the SVG goes through [`esc`]; every number through [`px`] or
//! [`num`], and non-finite values are dropped before drawing, so the output is always
//! well-formed XML (the tests parse it).

use crate::fmt::{esc, num};

const W: f64 = 330.0;
const H_LINE: f64 = 232.0;
const H_BAR: f64 = 262.0;
/// Plot margins: left (y tick labels and y label), right, top (title and legend), bottom (x
/// labels).
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 40.0;
const BOTTOM_LINE: f64 = 42.0;
/// Bar labels are long (`max_image_aperture`) and drawn at 45 degrees.
const BOTTOM_BAR: f64 = 84.0;

// Styles are attributes, not classes, so a plot copied out of the page (or rendered on its
// own) looks the same.
const T: &str = r##"font-family="sans-serif" font-size="12" font-weight="bold" fill="#222""##;
const TICK: &str = r##"font-family="sans-serif" font-size="10" fill="#444""##;
const LAB: &str = r##"font-family="sans-serif" font-size="11" fill="#333""##;
const AXIS: &str = r##"stroke="#444""##;
const BAR: &str = r##"stroke="#333" stroke-width="0.5""##;
const MEANTICK: &str = r##"stroke="#111" stroke-width="2""##;
const GRID: &str = "#eee";
const ZERO: &str = "#999";

/// Max activity in orange, mean in blue, the same pair the worker's PNG figures use.
pub const MAX_COLOUR: &str = "#e6550d";
pub const MEAN_COLOUR: &str = "#3182bd";

/// One curve of a line plot.
pub struct Series {
    pub name: &'static str,
    pub colour: &'static str,
    pub dashed: bool,
    /// (x, y) in stimulus order; drawn sorted by x.
    pub points: Vec<(f64, f64)>,
    /// Per-point marker colours (e.g. the hue of each hue stimulus); the series colour if None.
    pub marker_colours: Option<Vec<String>>,
}

/// How the x axis maps stimulus values.
#[derive(Clone)]
pub enum XAxis {
    /// A fixed domain with fixed ticks (angles: 0-360, orientations: 0-180), widened if the
    /// data fall outside it, or the data's own range with "nice" ticks when `None`.
    Linear(Option<(f64, f64, f64)>),
    /// Log base 2 (zoom factors, spatial frequencies): ticks at powers of two.
    Log2,
}

pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
}

/// One bar of a bar plot: the max activity as the bar, the mean as a tick across it.
pub struct Bar {
    pub label: String,
    pub colour: String,
    pub max: f64,
    pub mean: f64,
}

/// An SVG coordinate (one decimal is plenty at these sizes).
fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// Maps data values to pixels along one axis.
#[derive(Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
    log2: bool,
}

impl Scale {
    /// A linear axis mapping [lo, hi] onto pixels [p0, p1].
    fn linear(lo: f64, hi: f64, p0: f64, p1: f64) -> Scale {
        Scale {
            lo,
            hi,
            p0,
            p1,
            log2: false,
        }
    }

    fn at(&self, v: f64) -> f64 {
        let t = |v: f64| if self.log2 { v.log2() } else { v };
        let (lo, hi) = (t(self.lo), t(self.hi));
        self.p0 + (t(v) - lo) / (hi - lo) * (self.p1 - self.p0)
    }
}

/// A round step near `range / target` (1, 2 or 5 times a power of ten).
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A linear domain covering `lo..hi`, widened to whole ticks, and its ticks.
fn nice_domain(lo: f64, hi: f64, target: f64) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi - lo > 1e-12 * hi.abs().max(lo.abs()).max(1e-300) {
        (lo, hi)
    } else {
        // a flat curve (or a single point): give it some room around its value
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.5 } else { 1.0 };
        (lo - pad, hi + pad)
    };
    let step = nice_step(hi - lo, target);
    let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    (lo, hi, ticks_every(lo, hi, step))
}

fn ticks_every(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round() as i64;
    (0..=n.clamp(0, 100))
        .map(|i| {
            let t = lo + i as f64 * step;
            // snap -0.0 and rounding dust so labels read "0", "0.3", not "5.55e-17"
            if t.abs() < step * 1e-9 {
                0.0
            } else {
                t
            }
        })
        .collect()
}

/// The linear y scale of activities onto pixels [p0, p1], and its ticks. The domain always
/// includes 0, so bars and curves are read against zero.
fn y_scale(values: impl Iterator<Item = f64>, p0: f64, p1: f64) -> (Scale, Vec<f64>) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (lo, hi, ticks) = nice_domain(lo, hi, 4.0);
    (Scale::linear(lo, hi, p0, p1), ticks)
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The opening of every plot: the svg element and its title.
fn open(out: &mut String, h: f64, title: &str) {
    out.push_str(&format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><rect width="100%" height="100%" fill="white"/>"#,
        w = px(W),
        h = px(h),
        t = esc(title)
    ));
    out.push_str(&format!(
        r#"<text x="{}" y="16" text-anchor="middle" {T}>{}</text>"#,
        px(LEFT + (W - LEFT - RIGHT) / 2.0),
        esc(title)
    ));
}

/// The y axis: gridlines, tick labels and the rotated axis label.
fn y_axis(out: &mut String, y: &Scale, ticks: &[f64], label: &str, x0: f64, x1: f64) {
    for &t in ticks {
        let py = px(y.at(t));
        let stroke = if t == 0.0 { ZERO } else { GRID };
        out.push_str(&format!(
            r#"<line x1="{}" y1="{py}" x2="{}" y2="{py}" stroke="{stroke}"/><text x="{}" y="{}" text-anchor="end" {TICK}>{}</text>"#,
            px(x0),
            px(x1),
            px(x0 - 4.0),
            px(y.at(t) + 3.5),
            esc(&num(t))
        ));
    }
    let cy = (y.p0 + y.p1) / 2.0;
    out.push_str(&format!(
        r#"<text x="14" y="{c}" transform="rotate(-90 14 {c})" text-anchor="middle" {LAB}>{}</text>"#,
        esc(label),
        c = px(cy)
    ));
    out.push_str(&format!(
        r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" {AXIS}/>"#,
        px(y.p0),
        px(y.p1),
        x = px(x0)
    ));
}

/// The x domain and ticks of a line plot.
fn x_scale(axis: &XAxis, xs: &[f64], p0: f64, p1: f64) -> (Scale, Vec<f64>) {
    let (dmin, dmax) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    match axis {
        XAxis::Log2 => {
            let (lo, hi) = if dmin.is_finite() {
                (
                    dmin.log2().floor(),
                    dmax.log2().ceil().max(dmin.log2().floor() + 1.0),
                )
            } else {
                (-1.0, 1.0)
            };
            let ticks = (lo as i64..=hi as i64)
                .map(|e| 2f64.powi(e as i32))
                .collect();
            let scale = Scale {
                lo: 2f64.powf(lo),
                hi: 2f64.powf(hi),
                p0,
                p1,
                log2: true,
            };
            (scale, ticks)
        }
        XAxis::Linear(Some((lo, hi, step))) => {
            let lo = if dmin.is_finite() {
                lo.min((dmin / step).floor() * step)
            } else {
                *lo
            };
            let hi = if dmax.is_finite() {
                hi.max((dmax / step).ceil() * step)
            } else {
                *hi
            };
            (Scale::linear(lo, hi, p0, p1), ticks_every(lo, hi, *step))
        }
        XAxis::Linear(None) => {
            let (lo, hi, ticks) = if dmin.is_finite() {
                nice_domain(dmin, dmax, 5.0)
            } else {
                nice_domain(0.0, 1.0, 5.0)
            };
            (Scale::linear(lo, hi, p0, p1), ticks)
        }
    }
}

/// A line plot of one or more series against a shared x axis.
pub fn line_plot(p: &LinePlot) -> String {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H_LINE - BOTTOM_LINE, TOP);
    let log = matches!(p.x_axis, XAxis::Log2);
    // log axes cannot show x <= 0; drop such points rather than draw garbage
    let series: Vec<Vec<(usize, f64, f64)>> = p
        .series
        .iter()
        .map(|s| {
            let mut pts: Vec<(usize, f64, f64)> = finite(&s.points)
                .enumerate()
                .filter(|(_, (x, _))| !log || *x > 0.0)
                .map(|(i, (x, y))| (i, x, y))
                .collect();
            pts.sort_by(|a, b| a.1.total_cmp(&b.1));
            pts
        })
        .collect();
    let xs: Vec<f64> = series.iter().flatten().map(|p| p.1).collect();
    let (x, x_ticks) = x_scale(&p.x_axis, &xs, x0, x1);
    let (y, y_ticks) = y_scale(series.iter().flatten().map(|p| p.2), y0, y1);

    let mut out = String::new();
    open(&mut out, H_LINE, p.title);
    y_axis(&mut out, &y, &y_ticks, p.y_label, x0, x1);
    for &t in &x_ticks {
        let pxv = px(x.at(t));
        out.push_str(&format!(
            r#"<line x1="{pxv}" y1="{}" x2="{pxv}" y2="{}" {AXIS}/><text x="{pxv}" y="{}" text-anchor="middle" {TICK}>{}</text>"#,
            px(y0),
            px(y0 + 4.0),
            px(y0 + 15.0),
            esc(&num(t))
        ));
    }
    out.push_str(&format!(
        r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" {AXIS}/><text x="{}" y="{}" text-anchor="middle" {LAB}>{}</text>"#,
        px(x0),
        px(x1),
        px((x0 + x1) / 2.0),
        px(H_LINE - 8.0),
        esc(p.x_label),
        y = px(y0)
    ));

    for (s, pts) in p.series.iter().zip(&series) {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(_, a, b)| format!("{},{}", px(x.at(*a)), px(y.at(*b))))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        out.push_str(&format!(
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
            path.join(" "),
            esc(s.colour)
        ));
        for (i, a, b) in pts {
            let colour = s
                .marker_colours
                .as_ref()
                .and_then(|c| c.get(*i))
                .map(String::as_str)
                .unwrap_or(s.colour);
            out.push_str(&format!(
                r#"<circle cx="{}" cy="{}" r="2.6" fill="{}" stroke="{}" stroke-width="0.6"><title>{}: {} → {}</title></circle>"#,
                px(x.at(*a)),
                px(y.at(*b)),
                esc(colour),
                esc(s.colour),
                esc(s.name),
                esc(&num(*a)),
                esc(&num(*b))
            ));
        }
    }
    legend(
        &mut out,
        &p.series
            .iter()
            .map(|s| (s.name, s.colour, s.dashed))
            .collect::<Vec<_>>(),
    );
    out.push_str("</svg>");
    out
}

/// The legend: one row right-aligned between the title and the plot area, so it never hides
/// a peak.
fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    let ly = TOP - 10.0;
    let mut lx = W - RIGHT;
    for (name, colour, dashed) in entries.iter().rev() {
        // ~6 px per character at 10 px sans-serif, plus the line sample and a gap
        lx -= 6.0 * name.chars().count() as f64 + 30.0;
        let dash = if *dashed {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        out.push_str(&format!(
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="1.6"{dash}/><text x="{}" y="{}" {TICK}>{}</text>"#,
            px(lx),
            px(lx + 16.0),
            esc(colour),
            px(lx + 20.0),
            px(ly + 3.5),
            esc(name),
            y = px(ly)
        ));
    }
}

/// A bar plot of categorical stimuli, one bar per stimulus in the given order.
pub fn bar_plot(title: &str, y_label: &str, bars: &[Bar]) -> String {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H_BAR - BOTTOM_BAR, TOP);
    let bars: Vec<&Bar> = bars.iter().filter(|b| b.max.is_finite()).collect();
    let (y, y_ticks) = y_scale(bars.iter().flat_map(|b| [b.max, b.mean]), y0, y1);

    let mut out = String::new();
    open(&mut out, H_BAR, title);
    y_axis(&mut out, &y, &y_ticks, y_label, x0, x1);
    let slot = (x1 - x0) / bars.len().max(1) as f64;
    let width = slot * 0.72;
    for (i, b) in bars.iter().enumerate() {
        let cx = x0 + slot * (i as f64 + 0.5);
        let (top, bottom) = (y.at(b.max.max(0.0)), y.at(b.max.min(0.0)));
        out.push_str(&format!(
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" {BAR}><title>{}: max {}, mean {}</title></rect>"#,
            px(cx - width / 2.0),
            px(top),
            px(width),
            px((bottom - top).max(0.5)),
            esc(&b.colour),
            esc(&b.label),
            esc(&num(b.max)),
            esc(&num(b.mean))
        ));
        if b.mean.is_finite() {
            out.push_str(&format!(
                r#"<line x1="{}" y1="{my}" x2="{}" y2="{my}" {MEANTICK}/>"#,
                px(cx - width / 2.0),
                px(cx + width / 2.0),
                my = px(y.at(b.mean))
            ));
        }
        // labels hang from the axis at 45 degrees so twelve of them fit under 270 px
        let ly = y0 + 10.0;
        out.push_str(&format!(
            r#"<text x="{c}" y="{ly}" transform="rotate(-45 {c} {ly})" text-anchor="end" {TICK}>{}</text>"#,
            esc(&b.label),
            c = px(cx + 3.0),
            ly = px(ly)
        ));
    }
    out.push_str(&format!(
        r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" {AXIS}/>"#,
        px(x0),
        px(x1),
        y = px(y0)
    ));
    // the mean tick needs a key: the bars' own colours already encode the stimuli
    out.push_str(&format!(
        r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" {MEANTICK}/><text x="{}" y="{}" {TICK}>mean</text>"#,
        px(W - RIGHT - 54.0),
        px(W - RIGHT - 38.0),
        px(W - RIGHT - 34.0),
        px(TOP - 6.5),
        y = px(TOP - 10.0)
    ));
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_the_data_with_round_numbers() {
        let (lo, hi, ticks) = nice_domain(0.0, 7.3, 4.0);
        assert_eq!((lo, hi), (0.0, 8.0));
        assert_eq!(ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        let (lo, hi, _) = nice_domain(-0.13, 0.9, 4.0);
        assert!(lo <= -0.13 && hi >= 0.9);
        // a flat curve still gets a non-empty domain
        let (lo, hi, ticks) = nice_domain(3.0, 3.0, 4.0);
        assert!(lo < 3.0 && hi > 3.0 && ticks.len() >= 2);
    }

    #[test]
    fn log2_axis_ticks_at_powers_of_two() {
        let (s, ticks) = x_scale(&XAxis::Log2, &[0.25, 0.5, 1.0, 3.0, 4.0], 0.0, 100.0);
        assert_eq!(ticks, vec![0.25, 0.5, 1.0, 2.0, 4.0]);
        assert!((s.at(1.0) - 50.0).abs() < 1e-9);
    }
}
