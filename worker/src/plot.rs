//! Tuning-curve figures drawn in Rust on an RGB bitmap (no system fonts: text uses the public
//! domain 8x8 bitmap font of `font8x8`). A figure is a grid of cells: the max image first, then
//! one panel per curve. Each series is drawn normalised to its own largest |value|, so the max
//! and mean activity share one axis (1 = the series' peak).

use image::{Rgb, RgbImage};
use tch::{Kind, Tensor};

use crate::error::{Result, WorkerError};

const CELL_W: u32 = 264;
const CELL_H: u32 = 216;
const COLUMNS: u32 = 4;
/// Plot area inside a cell: margins left, right, top, bottom.
const MARGIN: (u32, u32, u32, u32) = (40, 10, 24, 36);

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TEXT: Rgb<u8> = Rgb([40, 40, 40]);
/// Series colours: mean activity, max activity.
pub const MEAN: Rgb<u8> = Rgb([31, 119, 180]);
pub const MAX: Rgb<u8> = Rgb([255, 127, 14]);

/// One panel of a figure.
pub enum Panel {
    /// Mean and max activity along a numeric axis.
    Curve {
        title: String,
        x: Vec<f64>,
        log_x: bool,
        mean: Vec<f64>,
        max: Vec<f64>,
    },
    /// Mean activity as bars (one colour each) with the max activity as a tick on each bar;
    /// `groups` labels runs of bars of equal length under the axis.
    Bars {
        title: String,
        colours: Vec<[u8; 3]>,
        groups: Vec<String>,
        mean: Vec<f64>,
        max: Vec<f64>,
    },
}

/// The figure as PNG bytes: `image` ([3, S, S] in [0, 1]) titled `title`, then the panels.
pub fn figure(title: &str, image: &Tensor, panels: &[Panel]) -> Result<Vec<u8>> {
    let cells = panels.len() as u32 + 1;
    let rows = cells.div_ceil(COLUMNS);
    let mut canvas = RgbImage::from_pixel(CELL_W * COLUMNS.min(cells), CELL_H * rows, WHITE);
    draw_image(&mut canvas, title, image)?;
    for (i, panel) in panels.iter().enumerate() {
        let cell = i as u32 + 1;
        let origin = ((cell % COLUMNS) * CELL_W, (cell / COLUMNS) * CELL_H);
        match panel {
            Panel::Curve {
                title,
                x,
                log_x,
                mean,
                max,
            } => draw_curve(&mut canvas, origin, title, x, *log_x, mean, max),
            Panel::Bars {
                title,
                colours,
                groups,
                mean,
                max,
            } => draw_bars(&mut canvas, origin, title, colours, groups, mean, max),
        }
    }
    let mut bytes = Vec::new();
    canvas
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| WorkerError::io("encode png")(std::io::Error::other(e)))?;
    Ok(bytes)
}

/// The max image, nearest-neighbour scaled to fit the first cell.
fn draw_image(canvas: &mut RgbImage, title: &str, image: &Tensor) -> Result<()> {
    text(canvas, 8, 8, title, TEXT);
    let hwc = image
        .to_device(tch::Device::Cpu)
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .to_kind(Kind::Uint8)
        .f_permute([1, 2, 0])?
        .contiguous();
    let (h, w) = (hwc.size()[0] as u32, hwc.size()[1] as u32);
    let pixels = Vec::<u8>::try_from(hwc.f_flatten(0, -1)?)?;
    let room = (CELL_W - 16).min(CELL_H - 32);
    // an integer enlargement when it fits, else shrunk to the room (nearest neighbour)
    let side = if h.max(w) <= room {
        h.max(w) * (room / h.max(w))
    } else {
        room
    };
    let (out_w, out_h) = (side * w / h.max(w), side * h / h.max(w));
    let (x0, y0) = (8 + (room - out_w) / 2, 24);
    for y in 0..out_h {
        for x in 0..out_w {
            let k = (((y * h / out_h) * w + x * w / out_w) * 3) as usize;
            let px = Rgb([pixels[k], pixels[k + 1], pixels[k + 2]]);
            canvas.put_pixel(x0 + x, y0 + y, px);
        }
    }
    Ok(())
}

/// Maps data to pixels inside a panel's plot area.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    y_min: f64,
}

impl Frame {
    /// The plot area of the cell at `origin`, y from `y_min` (<= 0) to 1.
    fn new(origin: (u32, u32), y_min: f64) -> Frame {
        let (l, r, t, b) = MARGIN;
        Frame {
            left: (origin.0 + l) as f64,
            top: (origin.1 + t) as f64,
            width: (CELL_W - l - r) as f64,
            height: (CELL_H - t - b) as f64,
            y_min,
        }
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.height * (1.0 - (v - self.y_min) / (1.0 - self.y_min))
    }

    /// Frame, horizontal grid lines and their labels at y_min, 0, 0.5 and 1.
    fn axes(&self, canvas: &mut RgbImage, title: &str) {
        text(canvas, self.left as i64, self.top as i64 - 18, title, TEXT);
        let mut ticks = vec![0.0, 0.5, 1.0];
        if self.y_min < 0.0 {
            ticks.insert(0, self.y_min);
        }
        for t in ticks {
            let y = self.y(t);
            line(canvas, (self.left, y), (self.left + self.width, y), GRID);
            text(canvas, self.left as i64 - 36, y as i64 - 4, &short(t), TEXT);
        }
        let (x0, y0) = (self.left, self.top);
        let (x1, y1) = (x0 + self.width, y0 + self.height);
        for (a, b) in [
            ((x0, y0), (x1, y0)),
            ((x1, y0), (x1, y1)),
            ((x1, y1), (x0, y1)),
            ((x0, y1), (x0, y0)),
        ] {
            line(canvas, a, b, BLACK);
        }
    }
}

fn draw_curve(
    canvas: &mut RgbImage,
    origin: (u32, u32),
    title: &str,
    x: &[f64],
    log_x: bool,
    mean: &[f64],
    max: &[f64],
) {
    let (mean, max) = (normalised(mean), normalised(max));
    let frame = Frame::new(origin, lowest(&mean, &max));
    frame.axes(canvas, title);
    let pos: Vec<f64> = x
        .iter()
        .map(|v| if log_x { v.log2() } else { *v })
        .collect();
    let (lo, hi) = (pos[0], pos[pos.len() - 1]);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let px = |p: f64| frame.left + 6.0 + (frame.width - 12.0) * (p - lo) / span;
    // at most 7 labelled ticks, evenly chosen among the sampled values
    let every = x.len().div_ceil(7);
    for (i, (v, p)) in x.iter().zip(&pos).enumerate().step_by(every) {
        let label = short(*v);
        let bottom = frame.top + frame.height;
        line(canvas, (px(*p), bottom), (px(*p), bottom + 3.0), BLACK);
        let w = 8 * label.len() as i64;
        let tx = (px(*p) as i64 - w / 2).max(origin.0 as i64 + 2);
        text(
            canvas,
            tx,
            bottom as i64 + 6 + 10 * (i / every % 2) as i64,
            &label,
            TEXT,
        );
    }
    for (series, colour) in [(&max, MAX), (&mean, MEAN)] {
        let points: Vec<(f64, f64)> = pos
            .iter()
            .zip(series.iter())
            .map(|(p, v)| (px(*p), frame.y(*v)))
            .collect();
        for pair in points.windows(2) {
            thick_line(canvas, pair[0], pair[1], colour);
        }
        for p in &points {
            fill_rect(canvas, p.0 - 2.0, p.1 - 2.0, 5.0, 5.0, colour);
        }
    }
    legend(canvas, origin);
}

fn draw_bars(
    canvas: &mut RgbImage,
    origin: (u32, u32),
    title: &str,
    colours: &[[u8; 3]],
    groups: &[String],
    mean: &[f64],
    max: &[f64],
) {
    let (mean, max) = (normalised(mean), normalised(max));
    let frame = Frame::new(origin, lowest(&mean, &max));
    frame.axes(canvas, title);
    let slot = frame.width / mean.len() as f64;
    let zero = frame.y(0.0);
    for (i, ((m, x), c)) in mean.iter().zip(&max).zip(colours).enumerate() {
        let left = frame.left + slot * i as f64 + slot * 0.15;
        let (top, bottom) = (frame.y(*m).min(zero), frame.y(*m).max(zero));
        fill_rect(
            canvas,
            left,
            top,
            slot * 0.7,
            (bottom - top).max(1.0),
            Rgb(*c),
        );
        let tick = frame.y(*x);
        thick_line(
            canvas,
            (left - 1.0, tick),
            (left + slot * 0.7 + 1.0, tick),
            MAX,
        );
    }
    let per_group = mean.len() / groups.len().max(1);
    for (g, label) in groups.iter().enumerate() {
        let centre = frame.left + slot * (per_group as f64 * (g as f64 + 0.5));
        let w = 8 * label.len() as i64;
        text(
            canvas,
            centre as i64 - w / 2,
            (frame.top + frame.height) as i64 + 6,
            label,
            TEXT,
        );
    }
    legend(canvas, origin);
}

/// "mean" and "max" in their series colours, top right of the cell.
fn legend(canvas: &mut RgbImage, origin: (u32, u32)) {
    let x = (origin.0 + CELL_W) as i64 - 8 * 9 - 6;
    let y = (origin.1 + CELL_H) as i64 - 12;
    text(canvas, x, y, "mean", MEAN);
    text(canvas, x + 8 * 5, y, "max", MAX);
}

/// Values divided by their largest |value| (all zeros stay zeros).
fn normalised(v: &[f64]) -> Vec<f64> {
    let peak = v.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    v.iter()
        .map(|x| if peak > 0.0 { x / peak } else { 0.0 })
        .collect()
}

fn lowest(a: &[f64], b: &[f64]) -> f64 {
    a.iter().chain(b).fold(0.0f64, |m, v| m.min(*v))
}

/// A number in at most 5 characters.
fn short(v: f64) -> String {
    if v == v.round() || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}").replacen("0.", ".", 1)
    }
}

fn put(canvas: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < canvas.width() && (y as u32) < canvas.height() {
        canvas.put_pixel(x as u32, y as u32, colour);
    }
}

fn fill_rect(canvas: &mut RgbImage, x: f64, y: f64, w: f64, h: f64, colour: Rgb<u8>) {
    for py in y.round() as i64..(y + h).round() as i64 {
        for px in x.round() as i64..(x + w).round() as i64 {
            put(canvas, px, py, colour);
        }
    }
}

/// A one-pixel line (DDA).
fn line(canvas: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as i64;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        put(canvas, x.round() as i64, y.round() as i64, colour);
    }
}

fn thick_line(canvas: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    for (dx, dy) in [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)] {
        line(canvas, (a.0 + dx, a.1 + dy), (b.0 + dx, b.1 + dy), colour);
    }
}

/// ASCII text with its top-left corner at (x, y); other characters print as `?`.
fn text(canvas: &mut RgbImage, x: i64, y: i64, s: &str, colour: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    put(canvas, x + 8 * i as i64 + col, y + row as i64, colour);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_has_one_cell_per_panel_plus_the_image() {
        let image = Tensor::rand([3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let curve = || Panel::Curve {
            title: "rotation (deg)".into(),
            x: vec![0.0, 90.0, 180.0, 270.0],
            log_x: false,
            mean: vec![1.0, 0.5, 1.0, 0.5],
            max: vec![2.0, 1.0, -1.0, 1.0],
        };
        let bars = Panel::Bars {
            title: "color".into(),
            colours: vec![[255, 0, 0], [0, 255, 0]],
            groups: vec!["R img".into()],
            mean: vec![1.0, 0.0],
            max: vec![1.0, 0.2],
        };
        let png = figure(
            "filter 3",
            &image,
            &[curve(), bars, curve(), curve(), curve()],
        )
        .unwrap();
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (4 * CELL_W, 2 * CELL_H)
        );
    }

    #[test]
    fn short_numbers_fit_five_characters() {
        for (v, s) in [
            (0.25, ".25"),
            (1.5, "1.5"),
            (345.0, "345"),
            (-0.5, "-.50"),
            (12.5, "12"),
        ] {
            assert_eq!(short(v), s);
        }
    }
}
