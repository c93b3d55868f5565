//! Cuts decision-point samples out of a simulated route: what the sensors saw before `t0`, the
//! stops still ahead, and the labels from the truth after `t0`.

use super::camera::{Camera, FOV_DEG, FRAME_STEP_S, Scene, clip};
use super::lights::Lights;
use super::render::{RasterSpec, render};
use super::route::{Route, local_hour};
use super::sensors::{GpsNoise, ImuModel, round7};
use super::world::{Area, dist};
use crate::data::sample::{Context, Image, ImageKind, Imu, Labels, LatLon, Sample, Spec, Stop};
use crate::data::video::Video;
use crate::frame::frame_heading;
use crate::seed::{self as rng, chance, uniform};

#[derive(Clone, Debug)]
pub struct CutOptions {
    pub spec: Spec,
    pub raster: RasterSpec,
    pub sample_every_s: f64,
    pub imu_p: f64,
    pub image_p: f64,
    /// Share of samples kept where the vehicle stands still over the whole window.
    pub stationary_keep_p: f64,
}

/// Rounds to a multiple of `step` (a power-of-ten fraction), printing without float noise.
fn round(x: f64, step: f64) -> f64 {
    let inv = (1.0 / step).round();
    (x * inv).round() / inv
}

pub fn cut(seed: u64, index: usize, area: &Area, route: &Route, o: &CutOptions) -> Vec<Sample> {
    let spec = &o.spec;
    let mut rng = rng::stream(seed, "samples", &[index as u64]);
    let c = Cutter {
        seed,
        index,
        area,
        route,
        o,
        gps: GpsNoise::new(seed, index, area, &route.track),
        imu_model: ImuModel::new(&mut rng, area),
        hist_span: (spec.history_len - 1) as f64 * spec.history_step_s as f64,
        depot: {
            let (lat, lon) = area.lat_lon(route.depot);
            LatLon {
                lat: round7(lat),
                lon: round7(lon),
            }
        },
        lights: (spec.video_frames > 0).then(|| Lights::new(seed, index, &route.track)),
    };
    let imu_span = (spec.imu_len as f64 - 1.0) / spec.imu_rate_hz as f64;
    // Every visit arrives before the last arrival, so a decision point before it has a stop
    // ahead.
    let last_arrival = route
        .visits
        .iter()
        .map(|v| v.arrival)
        .fold(f64::MIN, f64::max);
    let mut out = Vec::new();
    let mut t0 = round(
        route.departure + c.hist_span.max(imu_span) + uniform(&mut rng, 1.0, o.sample_every_s),
        0.1,
    );
    while t0 < last_arrival {
        let this_t0 = t0;
        t0 = round(t0 + o.sample_every_s * uniform(&mut rng, 0.6, 1.4), 0.1);
        if let Some(s) = c.sample_at(this_t0, out.len(), &mut rng) {
            out.push(s);
        }
    }
    out
}

/// What every sample of one simulated route shares while it is cut.
struct Cutter<'a> {
    seed: u64,
    index: usize,
    area: &'a Area,
    route: &'a Route,
    o: &'a CutOptions,
    gps: GpsNoise,
    imu_model: ImuModel,
    hist_span: f64,
    depot: LatLon,
    lights: Option<Lights<'a>>,
}

impl Cutter<'_> {
    /// The decision point at `t0` (the route's `n`-th sample), or None for a vehicle that stands
    /// still over the whole window and is not kept (`stationary_keep_p`).
    fn sample_at(&self, t0: f64, n: usize, rng: &mut rng::SimRng) -> Option<Sample> {
        let (area, route, spec) = (self.area, self.route, &self.o.spec);
        let track = &route.track;
        let here = track.state_at(t0).p;
        let fut_end = t0 + spec.future_len as f64 * spec.future_step_s as f64;
        if !self.moves(t0, here, fut_end) && !chance(rng, self.o.stationary_keep_p) {
            return None;
        }
        let ahead: Vec<&super::route::Visit> =
            route.visits.iter().filter(|v| v.arrival > t0).collect();
        let next_stop_id = ahead.first()?.stop;
        let (history, last_pos) = history_fixes(&self.gps, area, route, t0, spec, rng);
        let imu = self.imu(t0, rng);
        let images = if chance(rng, self.o.image_p) {
            vec![map_image(
                area,
                route,
                &ahead,
                &history,
                last_pos,
                &self.o.raster,
            )]
        } else {
            Vec::new()
        };
        // Stops are listed in an order that says nothing about the visit order.
        let mut listed: Vec<&super::route::Visit> =
            ahead.iter().take(spec.max_stops).copied().collect();
        listed.sort_by_key(|v| {
            rng::hash(self.seed, "stop-order", &[self.index as u64, v.stop as u64])
        });
        let stops = stop_list(area, route, &listed);
        let mut target = target_at(
            area,
            route,
            t0,
            spec,
            &listed,
            ahead[0].delivered,
            next_stop_id,
        );
        let video = self.video(&ahead, t0, fut_end, &mut target);
        Some(Sample {
            video,
            key: format!("{}-{:04}", route.id, n),
            route_id: route.id.clone(),
            region: area.region,
            t0,
            context: context_at(area, route, t0, here, self.depot),
            history,
            imu,
            images,
            stops,
            horizons_s: Vec::new(),
            plan_route: false,
            target: Some(target),
        })
    }

    /// Whether the vehicle moves more than 5 m from `here` (where it is at `t0`) at any of 21
    /// times over the history and the future.
    fn moves(&self, t0: f64, here: [f64; 2], fut_end: f64) -> bool {
        let track = &self.route.track;
        (0..=20)
            .map(|k| t0 - self.hist_span + k as f64 * (self.hist_span + fut_end - t0) / 20.0)
            .any(|t| dist(track.state_at(t).p, here) > 5.0)
    }

    /// The IMU rows before `t0`, for a share `imu_p` of the samples.
    fn imu(&self, t0: f64, rng: &mut rng::SimRng) -> Option<Imu> {
        let spec = &self.o.spec;
        chance(rng, self.o.imu_p).then(|| Imu {
            rate_hz: spec.imu_rate_hz,
            file: None,
            npy_base64: None,
            data: self.imu_model.read(
                &self.route.track,
                t0,
                spec.imu_rate_hz as f64,
                spec.imu_len,
                rng,
            ),
        })
    }

    /// The dashcam clip before `t0` when the world has video; records the light ahead in the
    /// target.
    fn video(
        &self,
        ahead: &[&super::route::Visit],
        t0: f64,
        fut_end: f64,
        target: &mut Labels,
    ) -> Option<Video> {
        let lights = self.lights.as_ref()?;
        let route = self.route;
        let stops_ahead: Vec<_> = ahead.iter().map(|v| route.stops[v.stop].pos).collect();
        let scene = Scene {
            area: self.area,
            track: &route.track,
            traffic: &route.traffic,
            lights,
            stops_ahead: &stops_ahead,
            seed: self.seed,
        };
        target.light_ahead = lights.ahead(t0, fut_end).map(|(_, phase)| phase);
        Some(dashcam(&scene, t0, &self.o.spec))
    }
}

/// The dashcam clip of the last seconds before `t0`: `spec.video_frames` frames
/// `FRAME_STEP_S` apart, the last at `t0`.
fn dashcam(scene: &Scene, t0: f64, spec: &Spec) -> Video {
    let n = spec.video_frames;
    let t: Vec<f64> = (0..n)
        .map(|k| round(t0 - (n - 1 - k) as f64 * FRAME_STEP_S, 0.1))
        .collect();
    let frames = clip(scene, &Camera::new(spec.video_size), &t);
    Video {
        t,
        fov_deg: Some(FOV_DEG as f32),
        file: None,
        npy_base64: None,
        frames: Some(frames),
    }
}

/// The GPS fixes of the history ending at `t0` (as the receiver reported them), and the true
/// position at `t0`.
fn history_fixes(
    gps: &GpsNoise,
    area: &Area,
    route: &Route,
    t0: f64,
    spec: &Spec,
    rng: &mut rng::SimRng,
) -> (Vec<crate::data::sample::Fix>, [f64; 2]) {
    let mut history = Vec::with_capacity(spec.history_len);
    let mut last_pos = route.track.state_at(t0).p;
    for k in 0..spec.history_len {
        let t = round(
            t0 - (spec.history_len - 1 - k) as f64 * spec.history_step_s as f64,
            0.1,
        );
        let (mut fix, p) = gps.fix(area, &route.track, t, rng);
        if !route.gps_reports_motion {
            fix.speed = None;
            fix.heading = None;
        }
        history.push(fix);
        last_pos = p;
    }
    (history, last_pos)
}

/// The map raster around the vehicle, turned to its heading, with the stops still ahead.
fn map_image(
    area: &Area,
    route: &Route,
    ahead: &[&super::route::Visit],
    history: &[crate::data::sample::Fix],
    at: [f64; 2],
    raster: &RasterSpec,
) -> Image {
    let heading = frame_heading(history);
    let stops_left: Vec<_> = ahead.iter().map(|v| route.stops[v.stop].pos).collect();
    let pixels = render(area, at, heading, &stops_left, &route.traffic, raster);
    Image {
        kind: ImageKind::Map,
        m_per_px: Some(raster.m_per_px as f32),
        heading_deg: Some(((heading * 100.0).round() / 100.0 % 360.0) as f32),
        anchor_px: Some([raster.anchor[0] as f32, raster.anchor[1] as f32]),
        file: None,
        png_base64: None,
        pixels: Some(pixels),
    }
}

/// The listed stops (in the order given, which says nothing about the visits).
fn stop_list(area: &Area, route: &Route, listed: &[&super::route::Visit]) -> Vec<Stop> {
    listed
        .iter()
        .map(|v| {
            let st = &route.stops[v.stop];
            let (lat, lon) = area.lat_lon(st.pos);
            Stop {
                id: st.id.clone(),
                lat: round7(lat),
                lon: round7(lon),
                tw_start: st.tw.map(|w| w.0),
                tw_end: st.tw.map(|w| w.1),
                service_s: Some(st.service_s as f32),
                packages: Some(st.packages),
                volume_l: Some(st.volume_l as f32),
                zone: Some(area.zone_name(st.zone)),
            }
        })
        .collect()
}

/// The labels from the truth after `t0`: the future track, arrivals and on-time per listed
/// stop, delivered, and which listed stop is next.
fn target_at(
    area: &Area,
    route: &Route,
    t0: f64,
    spec: &Spec,
    listed: &[&super::route::Visit],
    delivered: bool,
    next_stop_id: usize,
) -> Labels {
    let future = (1..=spec.future_len)
        .map(|k| {
            let p = route
                .track
                .state_at(t0 + k as f64 * spec.future_step_s as f64)
                .p;
            let (lat, lon) = area.lat_lon(p);
            [round7(lat), round7(lon)]
        })
        .collect();
    Labels {
        future_step_s: Some(spec.future_step_s),
        future,
        arrival_s: listed
            .iter()
            .map(|v| Some(round(v.arrival - t0, 0.1)))
            .collect(),
        on_time: listed
            .iter()
            .map(|v| {
                route.stops[v.stop]
                    .tw
                    .map(|(a, b)| v.service_start >= a && v.service_start <= b)
            })
            .collect(),
        delivered: Some(delivered),
        next_stop: listed.iter().position(|v| v.stop == next_stop_id),
        light_ahead: None,
    }
}

/// Time, weather, peak day, road, zone and depot at `t0`.
fn context_at(area: &Area, route: &Route, t0: f64, here: [f64; 2], depot: LatLon) -> Context {
    let day = ((t0 + area.utc_offset_s - super::route::DAY0_UTC) / 86_400.0).floor() as i64;
    let zone = area.zone_of(here);
    Context {
        hour: (round(local_hour(area, t0), 0.01) as f32).min(23.99),
        weekday: day.rem_euclid(7) as u8,
        weather: Some(route.cond.weather),
        peak_day: Some(route.cond.peak),
        road_class: Some(route.track.class_at(t0)),
        zone: Some(area.zone_name(zone)),
        zone_density: Some((area.zone_density[zone] * 100.0).round() / 100.0),
        depot: Some(depot),
    }
}
