//! One evaluation run: [`evaluate`] streams a split through the model and the baselines
//! (features and truths built on the loader's workers; on a CPU, several batches through the
//! model at once), accumulates every metric, rolls out whole
//! routes when the data has them, and assembles the report.

use super::*;

/// What an evaluation reads: the model (with the normalization it was trained with), the data,
/// what the baselines learned from the training split, and the device.
pub struct EvalInputs<'a> {
    pub model: &'a DfmModel,
    pub norm: &'a Arc<Featurizer>,
    pub data: &'a Path,
    pub manifest: &'a Manifest,
    pub stats: &'a TrainStats,
    pub device: &'a Device,
}

/// Evaluates on `o.split`; `info` names the model in the report. The one entry point of every
/// evaluation (`dfm eval`, the end of training, tests).
pub fn evaluate(
    inp: &EvalInputs,
    info: ModelInfo,
    o: &EvalOptions,
) -> anyhow::Result<(EvalReport, PlotData)> {
    o.check()?;
    let opts = LoaderOptions {
        batch_size: o.batch_size,
        workers: o.workers,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(inp.data, inp.manifest, &o.split, opts)?;
    let model = inp.model.valid().to_device(inp.device);
    // The data's own horizons (the model blends its knots to them).
    let mut run = Accumulated::new(&model, inp.manifest.spec.future_len);
    let routes_mode = inp.manifest.source == "lmrc";
    let dev = inp.device.clone();
    let per_batch = Arc::new(move |items: Vec<(Features, Truth)>| {
        let (f, t): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        (FeatureBatcher.batch(f, &dev), t)
    });
    let per_sample = truth_fn(inp.norm.clone(), inp.stats.clone(), routes_mode);
    // On a CPU several batches go through the model at once; metrics accumulate in order.
    let passes = crate::forward_pools::Passes::new(crate::forward_pools::plan_for(0, inp.device))?;
    passes.stream(
        loader.epoch(0, 0, per_sample, per_batch),
        &|(batch, truths): (Batch, Vec<Truth>)| {
            (Outputs::of(&model, &batch, o, inp.device), batch, truths)
        },
        |(out, batch, truths)| {
            for (i, t) in truths.iter().enumerate() {
                let pred = out.pred(i, t, inp.norm, model.modes, inp.norm.spec.max_stops);
                run.add(&pred, &batch.meta[i].key, inp.stats, o);
            }
            Ok(())
        },
    )?;
    run.report(&model, inp, info, o)
}

/// The per-sample work of the loader's workers: the features the model reads (its stop
/// capacity: the nearest stops) and the host-side truth and baselines.
fn truth_fn(
    norm: Arc<Featurizer>,
    stats: TrainStats,
    routes_mode: bool,
) -> Arc<dyn Fn(crate::Sample) -> (Features, Truth) + Send + Sync> {
    Arc::new(move |orig: crate::Sample| {
        // The decision keeps every stop for the route roll-out; the model reads its capacity.
        let decision = routes_mode.then(|| orig.clone());
        let (s, kept) = crate::data::stop_set::fit(orig, norm.spec.max_stops);
        let f = norm.features(&s);
        let truth = truth_of(&s, &f, &norm, &stats, decision, kept.is_some());
        (f, truth)
    })
}

/// Truth and baseline predictions of one sample, in meters and seconds in its local frame.
fn truth_of(
    s: &crate::Sample,
    f: &Features,
    norm: &Featurizer,
    stats: &TrainStats,
    decision: Option<crate::Sample>,
    over_capacity: bool,
) -> Truth {
    let horizons = &f.meta.horizons_s;
    let frame = f.meta.frame;
    let local = |lat: f64, lon: f64| {
        let (x, y) = frame.to_local(lat, lon);
        [x, y]
    };
    let t = s.target.as_ref();
    let raster = s
        .images
        .iter()
        .find(|im| im.kind == ImageKind::Map && im.m_per_px.is_some() && im.anchor_px.is_some())
        .and_then(|im| Some((im.pixels.clone()?, im.m_per_px?, im.anchor_px?)));
    Truth {
        future: t
            .filter(|t| t.future.len() == horizons.len())
            .map(|t| t.future.iter().map(|p| local(p[0], p[1])).collect()),
        cv: baselines::constant_velocity_at(s, &frame, horizons),
        // Labels come `step` apart (the first at `step`).
        ctrv: baselines::constant_turn_rate(
            s,
            &frame,
            horizons.len(),
            horizons.first().copied().unwrap_or(1.0),
        ),
        // The ridge answers at the horizons it was fitted at.
        ridge: stats
            .ridge
            .as_ref()
            .filter(|r| r.answers_at(horizons, f))
            .and_then(|r| r.predict_m(f, norm.traj_scale)),
        arrival: t.map(|t| t.arrival_s.clone()).unwrap_or_default(),
        eta_base: baselines::eta_distance_over_speed(s, &frame, stats.speeds.speed(s.region)),
        on_time: t.map(|t| t.on_time.clone()).unwrap_or_default(),
        delivered: t.and_then(|t| t.delivered),
        next: t.and_then(|t| t.next_stop),
        nearest: baselines::nearest_first_scores(s, &frame),
        same_zone: baselines::same_zone_nearest_scores(s, &frame),
        zone_neighbour: baselines::zone_neighbour_scores(s, &frame),
        zone_convention: s
            .context
            .zone
            .as_deref()
            .is_some_and(crate::zones::follows_convention),
        decision,
        over_capacity,
        slices: slices_of(s, &frame),
        history: s.history.iter().map(|h| local(h.lat, h.lon)).collect(),
        raster,
    }
}

/// The sample's slice values: region, weather, peak day, the light ahead (only samples
/// approaching a traffic light) and the history's speed band (only samples with a future to
/// score).
fn slices_of(s: &crate::Sample, frame: &crate::frame::LocalFrame) -> [String; 5] {
    let t = s.target.as_ref();
    let unknown = || "unknown".to_string();
    [
        s.region.name().to_string(),
        s.context
            .weather
            .map(|w| w.name().to_string())
            .unwrap_or_else(unknown),
        s.context
            .peak_day
            .map(|p| p.to_string())
            .unwrap_or_else(unknown),
        // Only samples approaching a traffic light have a light slice.
        t.and_then(|t| t.light_ahead)
            .map(|l| l.name().to_string())
            .unwrap_or_default(),
        // Only samples with a future to score have a speed slice.
        t.filter(|t| !t.future.is_empty())
            .and_then(|_| crate::kinematics::history_speed(s, frame))
            .map(|v| crate::kinematics::speed_band(v).to_string())
            .unwrap_or_default(),
    ]
}

/// The model's outputs for a batch, on the host.
struct Outputs {
    /// Trajectory points per sample.
    f: usize,
    traj: Vec<f32>,
    point: Vec<f32>,
    probs: Vec<f32>,
    eta_q: Vec<f32>,
    on_time: Vec<f32>,
    delivered: Vec<f32>,
    next: Vec<f32>,
}

impl Outputs {
    fn of(model: &DfmModel, batch: &Batch, o: &EvalOptions, device: &Device) -> Self {
        let masks = TokenMasks::keep(keep_mask(&o.drop, batch.len(), device));
        let out = model.forward(batch, &masks);
        Outputs {
            f: out.point.dims()[1],
            traj: to_vec(out.traj),
            point: to_vec(out.point),
            probs: to_vec(softmax(out.mode_logits, 1)),
            eta_q: to_vec(out.eta),
            on_time: to_vec(sigmoid(out.on_time_logits)),
            delivered: to_vec(sigmoid(out.delivered_logits)),
            next: to_vec(out.next_logits),
        }
    }

    /// Sample `i`'s predictions in meters and seconds (`k` modes, `n` stop slots).
    fn pred<'t>(&self, i: usize, t: &'t Truth, norm: &Featurizer, k: usize, n: usize) -> Pred<'t> {
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        Pred {
            t,
            modes: (0..k)
                .map(|m| norm.traj_m(&self.traj, i * k + m, self.f))
                .collect(),
            point: norm.traj_m(&self.point, i, self.f),
            probs: f64s(&self.probs[i * k..(i + 1) * k]),
            eta: (0..n)
                .map(|j| std::array::from_fn(|c| norm.eta_decode(self.eta_q[(i * n + j) * 3 + c])))
                .collect(),
            on_time: f64s(&self.on_time[i * n..(i + 1) * n]),
            delivered: self.delivered[i] as f64,
            next: f64s(&self.next[i * n..(i + 1) * n]),
        }
    }
}

/// Errors per horizon step, summed: best of K, most likely, CV, CTRV, ridge, most probable mode.
#[derive(Clone, Copy, Default)]
struct HorizonSums([f64; 6]);

/// Everything an evaluation accumulates while it streams.
struct Accumulated {
    k: usize,
    fl: usize,
    all: MetricSums,
    groups: [BTreeMap<String, MetricSums>; 5],
    horizon: Vec<HorizonSums>,
    horizon_n: u64,
    route_logs: BTreeMap<String, rollout::RouteLog>,
    over_capacity: usize,
    plot: PlotData,
}

fn err(p: &[f64; 2], q: &[f64; 2]) -> f64 {
    ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
}

impl Accumulated {
    /// `fl`: trajectory points of the data.
    fn new(model: &DfmModel, fl: usize) -> Self {
        Accumulated {
            k: model.modes,
            fl,
            all: MetricSums::default(),
            groups: Default::default(),
            horizon: vec![HorizonSums::default(); fl],
            horizon_n: 0,
            route_logs: BTreeMap::new(),
            over_capacity: 0,
            plot: PlotData {
                calibration: Calibration {
                    p50_bins: vec![(0.0, 0.0, 0); P50_EDGES_S.len()],
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    fn add(&mut self, pred: &Pred, key: &str, stats: &TrainStats, o: &EvalOptions) {
        let t = pred.t;
        let miss = o.miss_threshold_m;
        self.all.add(pred, stats, miss);
        self.over_capacity += t.over_capacity as usize;
        if let Some(d) = &t.decision {
            self.route_logs
                .entry(d.route_id.clone())
                .or_default()
                .add(d);
        }
        for (g, key) in self.groups.iter_mut().zip(&t.slices) {
            if key.is_empty() {
                continue;
            }
            g.entry(key.clone()).or_default().add(pred, stats, miss);
        }
        if let Some(truth) = &t.future {
            self.add_horizon(pred, truth);
            if o.plots.is_some() && self.plot.samples.len() < PLOT_SAMPLES && t.raster.is_some() {
                self.plot.samples.push(PlotSample {
                    key: key.to_string(),
                    raster: t.raster.clone(),
                    history: t.history.clone(),
                    truth: truth.clone(),
                    modes: pred.modes.clone(),
                    probs: pred.probs.clone(),
                    cv: t.cv.clone(),
                });
            }
        }
        self.add_calibration(pred);
    }

    /// Errors per horizon step of the model (best of K by final error, most likely, most
    /// probable mode) and the baselines.
    fn add_horizon(&mut self, pred: &Pred, truth: &[[f64; 2]]) {
        let (t, last) = (pred.t, self.fl - 1);
        let best = (0..self.k).fold(0, |a, m| {
            if err(&pred.modes[m][last], &truth[last]) < err(&pred.modes[a][last], &truth[last]) {
                m
            } else {
                a
            }
        });
        let top = top_mode(&pred.probs);
        for (s, h) in self.horizon.iter_mut().enumerate() {
            h.0[0] += err(&pred.modes[best][s], &truth[s]);
            h.0[1] += err(&pred.point[s], &truth[s]);
            h.0[5] += err(&pred.modes[top][s], &truth[s]);
            h.0[2] += err(&t.cv[s], &truth[s]);
            h.0[3] += err(&t.ctrv[s], &truth[s]);
            if let Some(r) = &t.ridge {
                h.0[4] += err(&r[s], &truth[s]);
            }
        }
        self.horizon_n += 1;
    }

    /// ETA quantile coverage and the p50 calibration bins.
    fn add_calibration(&mut self, pred: &Pred) {
        for (j, a) in pred.t.arrival.iter().enumerate().take(pred.eta.len()) {
            let Some(a) = a else { continue };
            let c = &mut self.plot.calibration;
            c.n += 1;
            for (q, below) in c.below.iter_mut().enumerate() {
                *below += (*a <= pred.eta[j][q]) as u64;
            }
            let p50 = pred.eta[j][1];
            let bin = P50_EDGES_S
                .iter()
                .position(|&e| p50 < e)
                .unwrap_or(P50_EDGES_S.len() - 1);
            let e = &mut c.p50_bins[bin];
            e.0 += p50;
            e.1 += a;
            e.2 += 1;
        }
    }

    /// Route roll-outs of the model (greedy and zone first) and the two heuristics; the planned
    /// roll-outs are returned.
    fn rollouts(
        &self,
        model: &DfmModel,
        inp: &EvalInputs,
        bs: usize,
        model_m: &mut Metrics,
        baselines: &mut BTreeMap<String, Metrics>,
    ) -> Option<BTreeMap<String, rollout::RolloutMetrics>> {
        if self.route_logs.is_empty() {
            return None;
        }
        let logs = &self.route_logs;
        let chooser = rollout::model_chooser(model, inp.norm, inp.device, false);
        let zone_first = rollout::model_chooser(model, inp.norm, inp.device, true);
        if let Some(m) = model_m.next_stop.as_mut() {
            m.rollout_zone_first = rollout::run(logs, &zone_first, bs);
            m.rollout = rollout::run(logs, &chooser, bs);
        }
        // Each rule the report lists (the neighbouring-zone rule only where zone ids allow it).
        let rules: [(&str, rollout::RuleScores); 3] = [
            ("nearest_stop_first", baselines::nearest_first_scores),
            (
                "same_zone_nearest_first",
                baselines::same_zone_nearest_scores,
            ),
            ("zone_neighbour_first", baselines::zone_neighbour_scores),
        ];
        for (who, scores) in rules {
            if let Some(m) = baselines.get_mut(who).and_then(|b| b.next_stop.as_mut()) {
                m.rollout = rollout::run(logs, &rollout::rule_chooser(scores), bs);
            }
        }
        let score = rollout::model_scorer(model, inp.norm, inp.device);
        rollout::planned(logs, &score, bs)
    }

    fn slices(&self, g: &BTreeMap<String, MetricSums>, miss: f64) -> BTreeMap<String, Slice> {
        g.iter()
            .map(|(name, acc)| {
                let (m, b) = acc.finish(self.k, miss);
                let slice = Slice {
                    samples: acc.samples,
                    model: m,
                    baselines: b,
                };
                (name.clone(), slice)
            })
            .collect()
    }

    fn horizon_rows(&self, step_s: f64) -> Vec<HorizonRow> {
        let hz = self.horizon_n.max(1) as f64;
        let steps = if self.horizon_n > 0 { self.fl } else { 0 };
        (0..steps)
            .map(|s| {
                let h = self.horizon[s].0;
                HorizonRow {
                    step: s + 1,
                    t_s: (s + 1) as f64 * step_s,
                    model_best_of_k_m: h[0] / hz,
                    model_top1_m: h[1] / hz,
                    model_top_mode_m: h[5] / hz,
                    constant_velocity_m: h[2] / hz,
                    constant_turn_rate_m: h[3] / hz,
                    ridge_m: (self.all.ridge.n > 0).then(|| h[4] / self.all.ridge.n as f64),
                }
            })
            .collect()
    }

    /// The report (and the plots, when asked).
    fn report(
        mut self,
        model: &DfmModel,
        inp: &EvalInputs,
        info: ModelInfo,
        o: &EvalOptions,
    ) -> anyhow::Result<(EvalReport, PlotData)> {
        let miss = o.miss_threshold_m;
        let (mut model_m, mut baselines) = self.all.finish(self.k, miss);
        let route_plans = self.rollouts(model, inp, o.batch_size, &mut model_m, &mut baselines);
        let horizon = self.horizon_rows(inp.manifest.spec.future_step_s as f64);
        self.plot.on_time_reliability = self.all.on_time.reliability();
        self.plot.delivered_reliability = self.all.delivered.reliability();
        self.plot.horizon = horizon.clone();
        let report = EvalReport {
            split: o.split.clone(),
            samples: self.all.samples,
            stop_capacity: inp.norm.spec.max_stops,
            samples_over_stop_capacity: self.over_capacity,
            model: info,
            trajectory: model_m.trajectory,
            eta: model_m.eta,
            on_time: model_m.on_time,
            delivered: model_m.delivered,
            next_stop: model_m.next_stop,
            baselines,
            route_plans,
            slices: Slices {
                region: self.slices(&self.groups[0], miss),
                weather: self.slices(&self.groups[1], miss),
                peak_day: self.slices(&self.groups[2], miss),
                light_ahead: self.slices(&self.groups[3], miss),
                speed: self.slices(&self.groups[4], miss),
                horizon,
            },
        };
        if let Some(dir) = &o.plots {
            plots::write_all(dir, &self.plot)?;
        }
        Ok((report, self.plot))
    }
}
