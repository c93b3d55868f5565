//! Evaluation plots (`dfm eval --plots DIR`):
//! - `modes.png`: for a few samples, the map raster with the history (black), the truth (green),
//!   constant velocity (grey) and the K predicted modes (blue, thicker = more probable).
//! - `eta_calibration.png`: how often the truth falls below each predicted quantile (ideal: 0.1,
//!   0.5, 0.9), and mean truth against mean predicted P50 per bin.
//! - `reliability.png`: reliability diagrams of on-time and delivered probabilities.
//! - `error_by_horizon.png`: mean displacement error per future step, model vs baselines.

use super::{PlotData, PlotSample};
use crate::draw::Canvas;
use crate::plot::{font_available, save_png};
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

pub fn write_all(dir: &Path, d: &PlotData) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !d.samples.is_empty() {
        modes(&dir.join("modes.png"), d)?;
    }
    eta_calibration(&dir.join("eta_calibration.png"), d)?;
    reliability(&dir.join("reliability.png"), d)?;
    if !d.horizon.is_empty() {
        horizon(&dir.join("error_by_horizon.png"), d)?;
    }
    Ok(())
}

const PANEL: i32 = 256;

fn modes(path: &Path, d: &PlotData) -> anyhow::Result<()> {
    let cols = 3;
    let rows = d.samples.len().div_ceil(cols) as i32;
    let gap = 6;
    let (w, h) = (
        cols as i32 * (PANEL + gap) + gap,
        rows * (PANEL + gap) + gap,
    );
    let mut cv = Canvas::new(w, h, [40, 40, 40]);
    for (i, s) in d.samples.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % cols) as i32 * (PANEL + gap),
            gap + (i / cols) as i32 * (PANEL + gap),
        );
        Panel::background(&mut cv, s, x0, y0).draw(&mut cv, s);
    }
    save_png(path, w as u32, h as u32, cv.data)
}

/// One sample's panel of `modes.png`: its corner, meters per pixel and where the vehicle sits.
struct Panel {
    x0: i32,
    y0: i32,
    m_per_px: f64,
    anchor: [f64; 2],
}

impl Panel {
    /// Paints the sample's map raster (or a plain ground without one) at (x0, y0).
    fn background(cv: &mut Canvas, s: &PlotSample, x0: i32, y0: i32) -> Panel {
        let (m_per_px, anchor) = match &s.raster {
            Some((img, m, a)) => {
                let scale = (PANEL / img.width as i32).max(1);
                cv.blit_scaled(img, x0, y0, scale);
                (
                    *m as f64 / scale as f64,
                    [a[0] as f64 * scale as f64, a[1] as f64 * scale as f64],
                )
            }
            None => {
                for y in 0..PANEL {
                    for x in 0..PANEL {
                        cv.put(x0 + x, y0 + y, [236, 231, 218]);
                    }
                }
                (1.0, [PANEL as f64 / 2.0, PANEL as f64 * 0.69])
            }
        };
        Panel {
            x0,
            y0,
            m_per_px,
            anchor,
        }
    }

    /// Local meters (x forward, y left) -> canvas pixels.
    fn to_px(&self, p: &[f64; 2]) -> [f64; 2] {
        [
            self.x0 as f64 + self.anchor[0] - p[1] / self.m_per_px,
            self.y0 as f64 + self.anchor[1] - p[0] / self.m_per_px,
        ]
    }

    fn inside(&self, q: [f64; 2]) -> bool {
        q[0] >= self.x0 as f64
            && q[1] >= self.y0 as f64
            && q[0] < (self.x0 + PANEL) as f64
            && q[1] < (self.y0 + PANEL) as f64
    }

    /// A path from the vehicle through `pts`, clamped to the panel.
    fn line(&self, cv: &mut Canvas, pts: &[[f64; 2]], width: f64, c: [u8; 3]) {
        let (x0, y0) = (self.x0 as f64, self.y0 as f64);
        let v: Vec<[f64; 2]> = std::iter::once(self.to_px(&[0.0, 0.0]))
            .chain(pts.iter().map(|p| self.to_px(p)))
            .map(|p| {
                [
                    p[0].clamp(x0, x0 + (PANEL - 1) as f64),
                    p[1].clamp(y0, y0 + (PANEL - 1) as f64),
                ]
            })
            .collect();
        cv.polyline(&v, width, c);
    }

    /// Constant velocity, the modes (least probable first, thicker and bluer the more
    /// probable), the truth and the history's fixes.
    fn draw(&self, cv: &mut Canvas, s: &PlotSample) {
        self.line(cv, &s.cv, 2.0, [120, 120, 120]);
        let pmax = s.probs.iter().cloned().fold(1e-9, f64::max);
        let mut order: Vec<usize> = (0..s.modes.len()).collect();
        order.sort_by(|&a, &b| s.probs[a].total_cmp(&s.probs[b]));
        for m in order {
            let t = s.probs[m] / pmax;
            let c = [
                (60.0 * (1.0 - t)) as u8,
                (90.0 + 60.0 * (1.0 - t)) as u8,
                230,
            ];
            self.line(cv, &s.modes[m], 1.0 + 3.0 * t, c);
        }
        self.line(cv, &s.truth, 3.0, [20, 170, 40]);
        for p in &s.history {
            let q = self.to_px(p);
            if self.inside(q) {
                cv.disc(q, 1.5, [0, 0, 0]);
            }
        }
    }
}

/// A chart area with or without text, depending on the fonts available.
fn chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    xl: &str,
    yl: &str,
) -> anyhow::Result<
    ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
>
where
    DB::ErrorType: 'static,
{
    let text = font_available();
    let mut b = ChartBuilder::on(area);
    b.margin(16);
    if text {
        b.caption(title, ("sans-serif", 18))
            .x_label_area_size(36)
            .y_label_area_size(50);
    }
    let mut c = b
        .build_cartesian_2d(x, y)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut mesh = c.configure_mesh();
    if text {
        mesh.x_desc(xl).y_desc(yl);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(c)
}

fn finish_legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    if font_available() {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(())
}

fn labelled<'a, DB: DrawingBackend + 'a>(
    s: &mut plotters::chart::SeriesAnno<'a, DB>,
    name: &str,
    color: RGBAColor,
) {
    if font_available() {
        s.label(name.to_string()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
        });
    }
}

fn eta_calibration(path: &Path, d: &PlotData) -> anyhow::Result<()> {
    let (w, h) = (1000u32, 460u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(w / 2);
        let c = &d.calibration;
        let mut ch = chart(
            &left,
            "ETA quantile calibration",
            0.0..1.0,
            0.0..1.0,
            "quantile level",
            "share of truths below",
        )?;
        ch.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))?;
        if c.n > 0 {
            let pts: Vec<(f64, f64)> = [0.1, 0.5, 0.9]
                .iter()
                .zip(c.below)
                .map(|(q, b)| (*q, b as f64 / c.n as f64))
                .collect();
            ch.draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))?;
            ch.draw_series(pts.iter().map(|p| Circle::new(*p, 5, BLUE.filled())))?;
        }
        let bins: Vec<(f64, f64)> = c
            .p50_bins
            .iter()
            .filter(|b| b.2 > 0)
            .map(|b| {
                (
                    (b.0 / b.2 as f64 / 60.0).max(0.05),
                    (b.1 / b.2 as f64 / 60.0).max(0.05),
                )
            })
            .collect();
        let hi = bins.iter().flat_map(|p| [p.0, p.1]).fold(1.0, f64::max) * 1.3;
        let mut ch = chart(
            &right,
            "mean truth per predicted P50 bin (min)",
            0.0..hi,
            0.0..hi,
            "predicted P50",
            "mean truth",
        )?;
        ch.draw_series(LineSeries::new(
            [(0.0, 0.0), (hi, hi)],
            BLACK.mix(0.4).stroke_width(1),
        ))?;
        ch.draw_series(LineSeries::new(bins.clone(), RED.stroke_width(2)))?;
        ch.draw_series(bins.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
        root.present()?;
    }
    save_png(path, w, h, buf)
}

fn reliability(path: &Path, d: &PlotData) -> anyhow::Result<()> {
    let (w, h) = (560u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut ch = chart(
            &root,
            "reliability",
            0.0..1.0,
            0.0..1.0,
            "mean predicted probability",
            "observed frequency",
        )?;
        ch.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))?;
        for (name, pts, color) in [
            ("on-time", &d.on_time_reliability, BLUE.to_rgba()),
            ("delivered", &d.delivered_reliability, RED.to_rgba()),
        ] {
            let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
            let s = ch.draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?;
            labelled(s, name, color);
            ch.draw_series(xy.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        finish_legend(&mut ch)?;
        root.present()?;
    }
    save_png(path, w, h, buf)
}

/// One line of the horizon plot: its label, its value in a row, its colour.
type Series = (&'static str, fn(&super::HorizonRow) -> f64, RGBAColor);

/// The horizon plot's lines every evaluation has (the ridge's only where it was fitted).
fn horizon_series() -> [Series; 4] {
    [
        ("model, best of K", |r| r.model_best_of_k_m, BLUE.to_rgba()),
        (
            "model, most likely (K=1)",
            |r| r.model_top1_m,
            CYAN.to_rgba(),
        ),
        (
            "constant velocity",
            |r| r.constant_velocity_m,
            RGBColor(120, 120, 120).to_rgba(),
        ),
        (
            "constant turn rate",
            |r| r.constant_turn_rate_m,
            RED.to_rgba(),
        ),
    ]
}

fn horizon(path: &Path, d: &PlotData) -> anyhow::Result<()> {
    let (w, h) = (760u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let xmax = d.horizon.last().map(|r| r.t_s).unwrap_or(1.0);
        let ymax = d
            .horizon
            .iter()
            .map(|r| {
                r.constant_velocity_m
                    .max(r.constant_turn_rate_m)
                    .max(r.model_top1_m)
            })
            .fold(1.0, f64::max)
            * 1.1;
        let mut ch = chart(
            &root,
            "displacement error by horizon",
            0.0..xmax,
            0.0..ymax,
            "seconds ahead",
            "mean error (m)",
        )?;
        for (name, get, color) in horizon_series() {
            let pts: Vec<(f64, f64)> = d.horizon.iter().map(|r| (r.t_s, get(r))).collect();
            let s = ch.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
            labelled(s, name, color);
        }
        let ridge: Vec<(f64, f64)> = d
            .horizon
            .iter()
            .filter_map(|r| Some((r.t_s, r.ridge_m?)))
            .collect();
        if !ridge.is_empty() {
            let color = MAGENTA.to_rgba();
            let s = ch.draw_series(LineSeries::new(ridge, color.stroke_width(2)))?;
            labelled(s, "ridge regression", color);
        }
        finish_legend(&mut ch)?;
        root.present()?;
    }
    save_png(path, w, h, buf)
}
