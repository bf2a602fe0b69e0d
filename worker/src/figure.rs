//! A filter's tuning figure: its max image beside every tuning curve with the derived numbers
//! under each, drawn by the chart code of the HTML report and the results browser
//! (`vephys_results::plots`, from the results the probe battery encodes), so the three show the
//! same thing. Written as SVG, and as PNG rasterized by resvg with DejaVu Sans compiled in (no
//! system fonts needed).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use vephys_proto::v1::{JobOutcome, JobResult};
use vephys_results::fmt::esc;
use vephys_results::plots::figures;

use crate::error::{Result, WorkerError};
use crate::probes::ProbeResult;

/// Figures per row.
const COLUMNS: usize = 3;
/// A cell: a chart (330 px wide, at most 262 high) and its caption lines below.
const CELL_W: f64 = 340.0;
const CAPTION_LINE: f64 = 13.0;
/// The max image's cell: the title, then the image scaled to this side.
const IMAGE_SIDE: f64 = 300.0;

/// The figure as SVG and as PNG.
pub struct Figure {
    pub svg: String,
    pub png: Vec<u8>,
}

/// `title` above the max image (PNG bytes), then one chart per curve of `results`.
pub fn tuning_figure(title: &str, image_png: &[u8], results: &[ProbeResult]) -> Result<Figure> {
    let svg = compose(title, image_png, results);
    let png = rasterize(&svg)?;
    Ok(Figure { svg, png })
}

/// The SVG document: cells in rows of `COLUMNS`, the max image first.
fn compose(title: &str, image_png: &[u8], results: &[ProbeResult]) -> String {
    // the results as a job would report them: the same encoding, the same charts
    let jobs: Vec<JobResult> = results
        .iter()
        .map(|r| JobResult {
            probe: r.probe().to_string(),
            result: Some(JobOutcome {
                derived_json: r.derived().to_json(),
                ..JobOutcome::default()
            }),
            points: r.points(),
            ..JobResult::default()
        })
        .collect();
    let by_probe: BTreeMap<&str, &JobResult> = jobs.iter().map(|j| (j.probe.as_str(), j)).collect();
    let charts = figures(&by_probe);

    let image = base64::engine::general_purpose::STANDARD.encode(image_png);
    let mut cells: Vec<(f64, String)> = vec![(
        IMAGE_SIDE + 30.0,
        format!(
            r##"<text x="8" y="18" font-family="sans-serif" font-size="13" font-weight="bold" fill="#222">{}</text><image x="8" y="26" width="{IMAGE_SIDE}" height="{IMAGE_SIDE}" image-rendering="optimizeSpeed" href="data:image/png;base64,{image}"/>"##,
            esc(title)
        ),
    )];
    for chart in &charts {
        let height = svg_height(&chart.svg);
        let mut cell = chart.svg.clone();
        let lines = wrap(&chart.caption);
        for (i, line) in lines.iter().enumerate() {
            cell.push_str(&format!(
                r##"<text x="8" y="{:.0}" font-family="sans-serif" font-size="10" fill="#333">{}</text>"##,
                height + CAPTION_LINE * (i as f64 + 1.0),
                esc(line)
            ));
        }
        cells.push((height + CAPTION_LINE * lines.len() as f64 + 6.0, cell));
    }

    let mut body = String::new();
    let mut y = 0.0;
    for row in cells.chunks(COLUMNS) {
        let row_height = row.iter().map(|(h, _)| *h).fold(0.0, f64::max);
        for (i, (_, cell)) in row.iter().enumerate() {
            body.push_str(&format!(
                r#"<g transform="translate({:.0},{y:.0})">{cell}</g>"#,
                i as f64 * CELL_W
            ));
        }
        y += row_height;
    }
    let width = CELL_W * cells.len().min(COLUMNS) as f64;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{y:.0}" viewBox="0 0 {width:.0} {y:.0}"><rect width="100%" height="100%" fill="white"/>{body}</svg>"#
    )
}

/// Caption parts (`a · b · c`) packed into lines that fit a cell.
fn wrap(caption: &str) -> Vec<String> {
    const WIDTH: usize = 62;
    let mut lines: Vec<String> = Vec::new();
    for part in caption.lines().flat_map(|l| l.split(" · ")) {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 3 + part.chars().count() <= WIDTH => {
                line.push_str(" · ");
                line.push_str(part);
            }
            _ => lines.push(part.to_string()),
        }
    }
    lines
}

/// The `height` of a chart's outer `<svg>` element (the results crate's charts have one).
fn svg_height(svg: &str) -> f64 {
    let tag = &svg[..svg.find('>').unwrap_or(svg.len())];
    tag.split("height=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or(262.0)
}

/// The fonts figures are set in, loaded once per process.
fn fonts() -> Arc<resvg::usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<resvg::usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = resvg::usvg::fontdb::Database::new();
            db.load_font_data(dejavu::sans::regular().to_vec());
            db.load_font_data(dejavu::sans::bold().to_vec());
            db.set_sans_serif_family("DejaVu Sans");
            Arc::new(db)
        })
        .clone()
}

fn rasterize(svg: &str) -> Result<Vec<u8>> {
    let fail = |what: &str, e: String| {
        WorkerError::io("draw the tuning figure")(std::io::Error::other(format!("{what}: {e}")))
    };
    let options = resvg::usvg::Options {
        fontdb: fonts(),
        ..resvg::usvg::Options::default()
    };
    let tree =
        resvg::usvg::Tree::from_str(svg, &options).map_err(|e| fail("svg", e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| fail("canvas", format!("{} x {} px", size.width(), size.height())))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| fail("png", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figure_reads_the_charts_height_and_draws_text_with_its_own_font() {
        assert_eq!(
            svg_height(r#"<svg width="330" height="232" viewBox="0 0 330 232"><rect/></svg>"#),
            232.0
        );
        let long =
            "preferred 0° · bandwidth (FWHM) 56.39° · peak/mean 1.573 · circular variance 0.9";
        let lines = wrap(long);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 62), "{lines:?}");
        assert_eq!(lines.join(" · "), long);
        // a title only: the font is the compiled-in one, whatever the machine has
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="30"><rect width="100%" height="100%" fill="white"/><text x="4" y="20" font-family="sans-serif" font-size="14" fill="#000">filter 7</text></svg>"##;
        let png = rasterize(svg).unwrap();
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (120, 30));
        let dark = image.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 20, "the text was drawn: {dark} dark pixels");
    }
}
