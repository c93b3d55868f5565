//! Plots drawn with plotters into a pixel buffer and encoded as PNG: a run's loss curves
//! (`loss.png`) here, evaluation plots in `eval::plots`.
//! Text uses DejaVu Sans, embedded in the binary (`assets/fonts/`, Bitstream Vera licence), so
//! that charts carry their labels on any machine, one without system fonts included, and look the
//! same everywhere.

use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font once; true when text can be drawn (false only if the font
/// could not be parsed: the charts are then drawn without labels).
pub fn font_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    })
}

/// Writes an RGB buffer as PNG, atomically.
pub fn save_png(path: &Path, w: u32, h: u32, rgb: Vec<u8>) -> anyhow::Result<()> {
    let px = crate::data::sample::Rgb8 {
        width: w,
        height: h,
        data: rgb,
    };
    crate::util::write_atomic(path, &crate::data::shards::png_bytes(&px)?)
}

/// The lines of a `metrics.jsonl` text (lines that are not JSON skipped).
pub fn metric_rows(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// (step, value) of `key` over metric rows, finite values only.
pub fn series(rows: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|p| p.1.is_finite())
        .collect()
}

/// Training loss (and each head's term) by step, and validation loss, from `metrics.jsonl`.
pub fn loss_curves(metrics: &Path, out: &Path) -> anyhow::Result<()> {
    let text = crate::util::read_text_bounded(metrics, crate::util::limits::METRICS)?;
    let rows = metric_rows(&text);
    let series = |key: &str| series(&rows, key);
    let curve = |label: &str, points, bold| Curve {
        label: label.to_string(),
        points,
        bold,
    };
    let mut all = vec![
        curve("train loss", series("loss"), true),
        curve("validation loss", series("val_loss"), true),
    ];
    for k in crate::config::LOSS_HEADS {
        let s = series(k);
        if s.iter().any(|p| p.1 != 0.0) {
            all.push(curve(k, s, false));
        }
    }
    all.retain(|c| !c.points.is_empty());
    curves("training losses (log scale)", &all, out)
}

/// One line of a plot: (step, value) points.
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn thicker.
    pub bold: bool,
}

/// Curves by step on a log scale, with a legend.
pub fn curves(title: &str, curves: &[Curve], out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!curves.is_empty(), "no losses logged yet");
    let (w, h) = (900u32, 560u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = font_available();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let values = || curves.iter().flat_map(|c| c.points.iter());
        let xmax = values().map(|p| p.0).fold(1.0, f64::max);
        let ymax = values().map(|p| p.1).fold(1e-3, f64::max);
        let ymin = values().map(|p| p.1).fold(f64::MAX, f64::min).max(1e-4);
        let mut b = ChartBuilder::on(&root);
        b.margin(20);
        if text {
            b.caption(title, ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = b.build_cartesian_2d(0.0..xmax, (ymin * 0.8..ymax * 1.2).log_scale())?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("step").y_desc("loss");
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
        for (i, c) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let width = if c.bold { 3 } else { 1 };
            let s = chart.draw_series(LineSeries::new(
                c.points.iter().copied(),
                color.stroke_width(width),
            ))?;
            if text {
                s.label(c.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    save_png(out, w, h, buf)
}

#[cfg(test)]
mod font_tests {
    use super::*;

    /// The embedded font parses and draws: text leaves dark pixels on a white canvas.
    #[test]
    fn the_embedded_font_draws_text() {
        assert!(font_available());
        let mut buf = vec![255u8; 200 * 50 * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (200, 50)).into_drawing_area();
            let style = TextStyle::from(("sans-serif", 24).into_font()).color(&BLACK);
            root.draw_text("loss 3.45", &style, (5, 5)).unwrap();
            root.present().unwrap();
        }
        let dark = buf.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 100, "{dark} dark pixels");
    }
}
