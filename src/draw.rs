//! A tiny RGB painter (filled convex polygons, thick segments, discs) used to render the
//! simulator's map rasters and evaluation plots over them. Pixel centres are at +0.5; no
//! anti-aliasing, so output is exactly reproducible.
//!
//! Why three drawing modules: this one paints pixels that become model inputs (the simulator's
//! rasters), so it must be byte-reproducible and free of fonts; `plot.rs` draws charts with
//! plotters (axes, labels, an embedded font) and holds the training loss plot;
//! `eval/plots.rs` builds the evaluation's charts from its metrics with those two.

pub struct Canvas {
    pub w: i32,
    pub h: i32,
    /// RGB, row-major.
    pub data: Vec<u8>,
}

impl Canvas {
    pub fn put(&mut self, x: i32, y: i32, c: [u8; 3]) {
        if x >= 0 && y >= 0 && x < self.w && y < self.h {
            let i = ((y * self.w + x) * 3) as usize;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn bbox(&self, pts: &[[f64; 2]], pad: f64) -> Option<(i32, i32, i32, i32)> {
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for p in pts {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let (x0, y0) = (
            (x0 - pad).floor().max(0.0) as i32,
            (y0 - pad).floor().max(0.0) as i32,
        );
        let (x1, y1) = (
            (x1 + pad).ceil().min(self.w as f64 - 1.0) as i32,
            (y1 + pad).ceil().min(self.h as f64 - 1.0) as i32,
        );
        (x0 <= x1 && y0 <= y1).then_some((x0, y0, x1, y1))
    }

    /// Fills a convex polygon (pixel centres inside).
    pub fn convex(&mut self, poly: &[[f64; 2]], c: [u8; 3]) {
        let Some((x0, y0, x1, y1)) = self.bbox(poly, 0.0) else {
            return;
        };
        let n = poly.len();
        let area2: f64 = (0..n)
            .map(|i| {
                let (a, b) = (poly[i], poly[(i + 1) % n]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        let sign = area2.signum();
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f64 + 0.5, y as f64 + 0.5];
                let inside = (0..n).all(|i| {
                    let (a, b) = (poly[i], poly[(i + 1) % n]);
                    sign * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) >= 0.0
                });
                if inside {
                    self.put(x, y, c);
                }
            }
        }
    }

    /// A segment of the given width (pixels).
    pub fn segment(&mut self, a: [f64; 2], b: [f64; 2], width: f64, c: [u8; 3]) {
        let r = width / 2.0;
        let Some((x0, y0, x1, y1)) = self.bbox(&[a, b], r + 1.0) else {
            return;
        };
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let l2 = (dx * dx + dy * dy).max(1e-12);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f64 + 0.5, y as f64 + 0.5];
                let u = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0);
                let (qx, qy) = (a[0] + u * dx - p[0], a[1] + u * dy - p[1]);
                if qx * qx + qy * qy <= r * r {
                    self.put(x, y, c);
                }
            }
        }
    }

    pub fn disc(&mut self, c0: [f64; 2], r: f64, c: [u8; 3]) {
        self.segment(c0, c0, 2.0 * r, c);
    }
}

impl Canvas {
    pub fn new(w: i32, h: i32, fill: [u8; 3]) -> Self {
        Canvas {
            w,
            h,
            data: fill
                .iter()
                .copied()
                .cycle()
                .take((w * h * 3) as usize)
                .collect(),
        }
    }

    /// Copies `src` (w x h RGB) scaled by an integer factor (nearest) at (x0, y0).
    pub fn blit_scaled(&mut self, src: &crate::data::sample::Rgb8, x0: i32, y0: i32, scale: i32) {
        for y in 0..src.height as i32 * scale {
            for x in 0..src.width as i32 * scale {
                let i = (((y / scale) * src.width as i32 + x / scale) * 3) as usize;
                self.put(
                    x0 + x,
                    y0 + y,
                    [src.data[i], src.data[i + 1], src.data[i + 2]],
                );
            }
        }
    }

    /// A polyline of the given width.
    pub fn polyline(&mut self, pts: &[[f64; 2]], width: f64, c: [u8; 3]) {
        for w in pts.windows(2) {
            self.segment(w[0], w[1], width, c);
        }
    }
}
