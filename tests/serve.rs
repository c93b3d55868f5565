//! Export, predict and serve: the same samples get the same predictions from `dfm predict`,
//! from the server and from the in-memory model; bad requests get a 4xx naming the field and the
//! server keeps serving; auth, metrics, model info and graceful shutdown work.

mod common;
use common::serving::*;
use common::*;
use dfm::data::manifest::Manifest;
use dfm::predict::to_request_json;
use dfm::serve::ServeOptions;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// Held by the tests that measure time (timeouts, a full queue) and by the load test, so the
/// load test's 64 clients never starve the others' deadlines on a 2-core machine.
static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timing() -> std::sync::MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn predict_serve_and_memory_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let memory: Vec<Value> = predictor(&bundle)
        .predict(&samples)
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    let m0 = &memory[0];
    assert_eq!(m0["modes"].as_array().unwrap().len(), 6);
    let p: f64 = m0["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["probability"].as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-4, "mode probabilities sum to 1");
    assert_eq!(
        m0["stops"].as_array().unwrap().len(),
        samples[0].stops.len()
    );
    let (lat, lon) = (
        m0["modes"][0]["lat_lon"][0][0].as_f64().unwrap(),
        m0["modes"][0]["lat_lon"][0][1].as_f64().unwrap(),
    );
    let last = samples[0].history.last().unwrap();
    assert!(
        (lat - last.lat).abs() < 0.01 && (lon - last.lon).abs() < 0.01,
        "predictions are near the vehicle"
    );

    // dfm predict on JSON lines.
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = samples
        .iter()
        .map(|s| serde_json::to_string(&to_request_json(s).unwrap()).unwrap())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let (ok, _, err) = dfm(&[
        "predict",
        "--model",
        bundle.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let cli: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cli, memory, "predict CLI = in-memory model, exactly");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut srv = start(
            &bundle,
            ServeOptions {
                max_batch: 64,
                max_wait_ms: 2,
                // Several forward passes at once, whatever this machine's cores.
                model_workers: 3,
                ..Default::default()
            },
        )
        .await;
        let c = reqwest::Client::new();
        // A list in one request: one forward pass, same batch: exactly the same numbers.
        let list = format!("[{}]", lines.join(","));
        let (status, v) = post(&c, &srv.url, list.into_bytes(), None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v.as_array().unwrap(), &memory);
        // One sample per request, concurrently: batched with each other, equal up to float
        // reassociation.
        let handles: Vec<_> = lines
            .iter()
            .map(|l| {
                let (c, url, body) = (c.clone(), srv.url.clone(), l.clone().into_bytes());
                tokio::spawn(async move { post(&c, &url, body, None).await })
            })
            .collect();
        let mut singles = Vec::new();
        for h in handles {
            singles.push(h.await.unwrap());
        }
        for (i, (status, v)) in singles.iter().enumerate() {
            assert_eq!(*status, 200);
            assert!(close(v, &memory[i]), "sample {i}: {v} vs {}", memory[i]);
        }
        let metrics = c
            .get(format!("{}/metrics", srv.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("dfm_requests_total{code=\"200\"} 13"),
            "{metrics}"
        );
        assert!(
            metrics.contains("dfm_batch_size_bucket")
                && metrics.contains("dfm_request_duration_seconds_count 13")
        );
        let info: Value = c
            .get(format!("{}/v1/model", srv.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["schema_version"], json!(dfm::SCHEMA_VERSION));
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

/// A request with `"plan_route": true` gets every stop once, in its zone plan driven from the end
/// the model finds likelier; its log-likelihood is evaluation's (`route_plans.model`: the
/// model's log-softmax over all its stop slots, where serving reads only the listed ones),
/// decision by decision along that walk; the server answers the
/// same plan; a plan without stops is a 422 naming `plan_route`.
#[test]
fn route_plans_are_whole_orders_driven_the_likelier_way() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let p = predictor(&bundle);
    let route = samples
        .iter()
        .max_by_key(|s| s.stops.len())
        .unwrap()
        .clone();
    assert!(route.stops.len() >= 3, "{} stops", route.stops.len());
    let mut asked = dfm::predict::parse_sample(
        &serde_json::to_vec(&to_request_json(&route).unwrap()).unwrap(),
        &p.limits(),
    )
    .unwrap();
    asked.plan_route = true;
    let both = p.predict(&[route.clone(), asked.clone()]);
    assert!(both[0].route_plan.is_none(), "only when asked");
    let plan = both[1].route_plan.clone().expect("a route plan");
    let mut ids = plan.order.clone();
    ids.sort();
    let mut want: Vec<String> = route.stops.iter().map(|s| s.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want, "every stop once");
    let zone_plan = dfm::predict::route_plan::plan(&route).unwrap();
    let [fwd, rev] = zone_plan.orders().map(|o| {
        o.iter()
            .map(|&i| route.stops[i].id.clone())
            .collect::<Vec<_>>()
    });
    assert!(plan.order == fwd || plan.order == rev);
    let ll = |order: &[String]| -> f64 {
        let idx: Vec<usize> = order
            .iter()
            .map(|id| route.stops.iter().position(|s| &s.id == id).unwrap())
            .collect();
        // Evaluation's scorer: the model's log-softmax over every stop slot (no trimming).
        let score =
            dfm::eval::rollout::model_scorer(&p.loaded.model, &p.loaded.featurizer, p.device());
        dfm::predict::route_plan::walk(&route, &idx)
            .into_iter()
            .map(|(d, id)| {
                let k = d.stops.iter().position(|s| s.id == id).unwrap();
                score(&[d], &[k])[0]
            })
            .sum()
    };
    let (chosen, other) = if plan.order == fwd {
        (&fwd, &rev)
    } else {
        (&rev, &fwd)
    };
    assert!((ll(chosen) - plan.log_likelihood).abs() < 1e-3 * plan.log_likelihood.abs().max(1.0));
    assert!(
        (ll(other) - plan.reverse_log_likelihood).abs()
            < 1e-3 * plan.reverse_log_likelihood.abs().max(1.0)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The queue holds exactly this plan's work: the request itself and two per stop.
        let o = ServeOptions {
            max_samples: 1,
            max_queue_samples: 1 + 2 * route.stops.len(),
            ..Default::default()
        };
        let mut srv = start(&bundle, o).await;
        let c = reqwest::Client::new();
        let mut body = to_request_json(&route).unwrap();
        body["plan_route"] = json!(true);
        let (s, v) = post(&c, &srv.url, serde_json::to_vec(&body).unwrap(), None).await;
        assert_eq!(s, 200, "{v}");
        // One stop more is more work than the queue holds: refused before it is prepared.
        let mut more = body.clone();
        let mut extra = more["stops"][0].clone();
        extra["id"] = json!("one-more");
        more["stops"].as_array_mut().unwrap().push(extra);
        let (s, e) = post(&c, &srv.url, serde_json::to_vec(&more).unwrap(), None).await;
        assert_eq!(s, 413, "{e}");
        assert!(e["error"].as_str().unwrap().contains("route plan"), "{e}");
        // A plan names stops by id: an id listed twice is refused.
        let mut twice = body.clone();
        let first = twice["stops"][0].clone();
        twice["stops"][1]["id"] = first["id"].clone();
        let (s, e) = post(&c, &srv.url, serde_json::to_vec(&twice).unwrap(), None).await;
        assert_eq!((s, e["field"].as_str()), (422, Some("plan_route")), "{e}");
        assert!(e["error"].as_str().unwrap().contains("twice"), "{e}");
        let served = serde_json::to_value(&both[1].route_plan).unwrap();
        assert_eq!(v["route_plan"]["order"], served["order"]);
        assert!(
            close(&v["route_plan"], &served),
            "{} vs {served}",
            v["route_plan"]
        );
        body["stops"] = json!([]);
        let (s, v) = post(&c, &srv.url, serde_json::to_vec(&body).unwrap(), None).await;
        assert_eq!((s, v["field"].as_str()), (422, Some("plan_route")), "{v}");
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

/// `dfm bench serve --plan-route`: every request is answered (the bench fails on any other
/// status) and brings its plan's decisions to the forward passes (one-at-a-time requests fill
/// passes of more than one input only through them).
#[test]
fn bench_serve_sends_route_plans() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let mut routes: Vec<dfm::Sample> = samples
        .into_iter()
        .filter(|s| s.stops.len() >= 2)
        .take(2)
        .collect();
    assert!(!routes.is_empty());
    let o = ServeOptions {
        model_workers: 1,
        ..Default::default()
    };
    let bench = |samples: &[dfm::Sample]| {
        dfm::bench::serve::run(predictor(&bundle), samples, "tiny", &[1], 4, &o).unwrap()
    };
    let plain = bench(&routes);
    assert!(!plain.route_plans);
    assert!((plain.rows[0].mean_batch - 1.0).abs() < 1e-9, "{plain:?}");
    for s in &mut routes {
        s.plan_route = true;
    }
    let planned = bench(&routes);
    assert!(planned.route_plans && planned.render().contains("route plan"));
    assert_eq!(planned.rows[0].requests, 4);
    assert!(planned.rows[0].mean_batch > 2.0, "{planned:?}");
}

/// Mean distance between two trajectories of the same length, meters.
fn mean_gap(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1]))
        .sum::<f64>()
        / a.len() as f64
}

/// A request may ask for any horizons up to the model's (trajectories between its 2 s knots are
/// blended linearly, the constant-velocity prior included), in one batch with requests that do
/// not; and a history sampled every 2 s (the model saw 1 s) is read on the model's grid.
#[test]
fn requested_horizons_and_any_history_step() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let p = predictor(&bundle);
    let parse = |v: &Value| {
        dfm::predict::parse_sample(&serde_json::to_vec(v).unwrap(), &p.limits()).unwrap()
    };
    let plain = parse(&to_request_json(&samples[0]).unwrap());
    let mut asked = plain.clone();
    asked.horizons_s = vec![2.0, 5.0, 30.0];
    let both = p.predict(&[plain.clone(), asked.clone()]);
    let (d, h) = (&both[0].most_likely.local_m, &both[1].most_likely.local_m);
    assert_eq!(d.len(), 15);
    assert_eq!(both[0].horizons_s[14], 30.0);
    assert_eq!(both[1].horizons_s, vec![2.0, 5.0, 30.0]);
    assert_eq!(h.len(), 3);
    let mid = [(d[1][0] + d[2][0]) / 2.0, (d[1][1] + d[2][1]) / 2.0];
    for (got, want) in [(h[0], d[0]), (h[1], mid), (h[2], d[14])] {
        assert!(
            (got[0] - want[0]).abs() < 1e-3 && (got[1] - want[1]).abs() < 1e-3,
            "{got:?} vs {want:?}"
        );
    }
    assert_eq!(both[1].modes[0].local_m.len(), 3);
    // Alone, the same answer as in the mixed batch.
    let alone = p.predict(std::slice::from_ref(&asked));
    assert!(mean_gap(&alone[0].most_likely.local_m, h) < 1e-4);

    // Every other fix of a moving vehicle's 1 s history: a 2 s history ending at t0.
    let moving = samples
        .iter()
        .map(|s| parse(&to_request_json(s).unwrap()))
        .find(|s| {
            let (a, b) = (&s.history[0], s.history.last().unwrap());
            (a.lat - b.lat).abs() + (a.lon - b.lon).abs() > 1e-4
        })
        .expect("a moving vehicle among the test samples");
    let mut sparse = moving.clone();
    let n = sparse.history.len();
    sparse.history = (0..n)
        .filter(|i| (n - 1 - i) % 2 == 0)
        .map(|i| moving.history[i])
        .collect();
    sparse.imu = None;
    let mut full = moving.clone();
    full.imu = None;
    let out = p.predict(&[full, sparse]);
    let (a, b) = (&out[0].most_likely.local_m, &out[1].most_likely.local_m);
    let travel = a[14][0].hypot(a[14][1]);
    let gap = mean_gap(a, b);
    assert!(
        gap < 0.1 * travel + 1.0,
        "a 2 s history predicts {gap:.2} m away from the 1 s one ({travel:.1} m travelled)"
    );
}

#[test]
fn bad_requests_get_4xx_naming_the_field_and_serving_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let good: Value = to_request_json(&samples[0]).unwrap();
    let token_ok = "s3cret-token";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let o = ServeOptions {
            max_body_bytes: 256 * 1024,
            token: Some(token_ok.into()),
            ..Default::default()
        };
        let mut srv = start(&bundle, o).await;
        let c = reqwest::Client::new();
        let t = Some(token_ok);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        // Auth. The server answers 401 before reading the body (it reads none from a client
        // without the token), so a large body could still be in flight when the connection
        // closes: these requests carry a small one.
        let small = b"{\"key\": \"x\"}".to_vec();
        let (s, v) = post(&c, &srv.url, small.clone(), None).await;
        assert_eq!(
            (s, v["error"].as_str().unwrap().contains("token")),
            (401, true)
        );
        let (s, _) = post(&c, &srv.url, small, Some("wrong-token!")).await;
        assert_eq!(s, 401);
        // Malformed JSON.
        let (s, v) = post(&c, &srv.url, b"{\"key\": ".to_vec(), t).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].is_string());
        // A missing field.
        let (s, v) = post(
            &c,
            &srv.url,
            with(&|v| {
                v.as_object_mut().unwrap().remove("route_id");
            }),
            t,
        )
        .await;
        assert_eq!(s, 422, "{v}");
        assert!(v["error"].as_str().unwrap().contains("route_id"), "{v}");
        // A wrong type.
        let (s, v) = post(&c, &srv.url, with(&|v| v["t0"] = json!("yesterday")), t).await;
        assert_eq!((s, v["field"].as_str()), (422, Some("t0")), "{v}");
        // NaN (bare token): a syntax error, still naming the field.
        let body = String::from_utf8(with(&|_| {})).unwrap();
        let at = body.find("\"history\":[{").unwrap();
        let lat = at + body[at..].find("\"lat\":").unwrap() + 6;
        let end = lat + body[lat..].find(',').unwrap();
        let nan = format!("{}NaN{}", &body[..lat], &body[end..]);
        let (s, v) = post(&c, &srv.url, nan.into_bytes(), t).await;
        assert_eq!(
            (s, v["field"].as_str()),
            (400, Some("history[0].lat")),
            "{v}"
        );
        // Horizons past the model's (30 s), or not increasing.
        for bad in [json!([10.0, 31.0]), json!([10.0, 5.0])] {
            let (s, v) = post(&c, &srv.url, with(&|v| v["horizons_s"] = bad.clone()), t).await;
            assert_eq!(
                (s, v["field"].as_str()),
                (422, Some("horizons_s[1]")),
                "{v}"
            );
        }
        // Out-of-range coordinates.
        let (s, v) = post(
            &c,
            &srv.url,
            with(&|v| v["history"][3]["lon"] = json!(200.0)),
            t,
        )
        .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("history[3].lon")),
            "{v}"
        );
        // The IMU as base64 `.npy` (what to_request_json writes) or as rows: the same answer;
        // an array that does not decode, or of another shape, is named.
        let moving = samples.iter().find(|s| s.imu.is_some()).unwrap();
        let npy = to_request_json(moving).unwrap();
        assert!(npy["imu"]["npy_base64"].is_string() && npy["imu"].get("data").is_none());
        let mut rows = npy.clone();
        rows["imu"] = json!({"rate_hz": moving.imu.as_ref().unwrap().rate_hz,
                             "data": moving.imu.as_ref().unwrap().data});
        let (s1, a) = post(&c, &srv.url, serde_json::to_vec(&npy).unwrap(), t).await;
        let (s2, b) = post(&c, &srv.url, serde_json::to_vec(&rows).unwrap(), t).await;
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        assert_eq!(a["most_likely"], b["most_likely"]);
        let three_columns = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            dfm::data::npy::write_f32(&[0.0; 6], &[2, 3]),
        );
        for bad in [json!("not base64!"), json!(three_columns)] {
            let mut v = npy.clone();
            v["imu"]["npy_base64"] = bad;
            let (s, v) = post(&c, &srv.url, serde_json::to_vec(&v).unwrap(), t).await;
            assert_eq!(
                (s, v["field"].as_str()),
                (422, Some("imu.npy_base64")),
                "{v}"
            );
        }
        // In a list, the element is named.
        let list = format!(
            "[{},{}]",
            good,
            String::from_utf8(with(&|v| v["stops"][0]["lat"] = json!(-91.0))).unwrap()
        );
        let (s, v) = post(&c, &srv.url, list.into_bytes(), t).await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("[1].stops[0].lat")),
            "{v}"
        );
        // An image given by a shard member name instead of inline.
        if !samples[0].images.is_empty() {
            let (s, v) = post(
                &c,
                &srv.url,
                with(&|v| {
                    v["images"][0].as_object_mut().unwrap().remove("png_base64");
                    v["images"][0]["file"] = json!("map.png");
                }),
                t,
            )
            .await;
            assert_eq!(
                (s, v["field"].as_str()),
                (422, Some("images[0].png_base64")),
                "{v}"
            );
        }
        // A clip of more frames than a clip may have: refused from its .npy header.
        let n = dfm::data::video::MAX_FRAMES + 1;
        let npy = dfm::data::npy::write_u8(&vec![0; n * 2 * 2 * 3], &[n, 2, 2, 3]);
        let (s, v) = post(
            &c,
            &srv.url,
            with(&|v| {
                let t0 = v["t0"].as_f64().unwrap();
                v["video"] = json!({
                    "t": (0..n).map(|k| t0 - 0.1 * (n - 1 - k) as f64).collect::<Vec<_>>(),
                    "npy_base64": base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD, &npy),
                });
            }),
            t,
        )
        .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("video.npy_base64")),
            "{v}"
        );
        // An empty list.
        let (s, _) = post(&c, &srv.url, b"[]".to_vec(), t).await;
        assert_eq!(s, 422);
        // Oversize body.
        let big = vec![b' '; 300 * 1024];
        let (s, v) = post(&c, &srv.url, big, t).await;
        assert_eq!(s, 413, "{v}");
        // Unknown endpoint.
        let r = c
            .get(format!("{}/v2/predict", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        // ...and a good request still succeeds, with targets ignored.
        let (s, v) = post(&c, &srv.url, serde_json::to_vec(&good).unwrap(), t).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["key"], good["key"]);
        // Health needs no token; metrics do.
        assert_eq!(
            c.get(format!("{}/healthz", srv.url))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        assert_eq!(
            c.get(format!("{}/metrics", srv.url))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            401
        );
        let m = c
            .get(format!("{}/metrics", srv.url))
            .bearer_auth(token_ok)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            m.contains("dfm_requests_total{code=\"422\"}")
                && m.contains("dfm_requests_total{code=\"401\"} 2"),
            "{m}"
        );

        // Graceful shutdown: a request in flight when the signal comes still gets its answer.
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

#[test]
fn shutdown_finishes_in_flight_requests_and_sigterm_stops_the_binary() {
    let _timing = timing();
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let body = serde_json::to_vec(&to_request_json(&samples[0]).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The batcher waits 400 ms for company: the request is in flight when shutdown starts.
        let mut srv = start(
            &bundle,
            ServeOptions {
                max_wait_ms: 400,
                ..Default::default()
            },
        )
        .await;
        let c = reqwest::Client::new();
        let url = srv.url.clone();
        let req = tokio::spawn(async move { post(&c, &url, body, None).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        srv.stop.take().unwrap().send(()).unwrap();
        let (status, v) = req.await.unwrap();
        assert_eq!(status, 200, "{v}");
        srv.handle.await.unwrap().unwrap();
    });
    // The real binary: SIGTERM makes it stop cleanly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(dfm_bin())
        .args([
            "serve",
            "--model",
            bundle.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 60, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit after SIGTERM: {:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"));

    // A client that sent its headers and no body does not hold the exit past the drain time
    // the server announces (Kubernetes kills a pod 30 s after SIGTERM).
    let child = std::process::Command::new(dfm_bin())
        .args(["serve", "--model", bundle.to_str().unwrap()])
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--shutdown-grace-ms",
            "500",
        ])
        .args(["--request-timeout-ms", "120000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let mut stuck = loop {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break c;
        }
        assert!(t.elapsed().as_secs() < 60, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::io::Write::write_all(
        &mut stuck,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let asked = std::time::Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit after SIGTERM: {:?} {err}",
        out.status
    );
    assert!(
        err.contains("1 connection(s) still open after 500 ms"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "exited {took:?} after SIGTERM with a 500 ms drain (the request timeout is 120 s)"
    );
    drop(stuck);
}

/// [`png_claiming`] as base64 (a request's `png_base64`).
fn png_claiming_base64(side: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(png_claiming(side))
}

/// Sends raw bytes on a fresh connection and reads what comes back until the server closes it
/// or `wait` passes: (the response text, whether the server closed the connection).
async fn raw(url: &str, bytes: &[u8], wait: std::time::Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

#[test]
fn hostile_clients_are_bounded_and_the_server_keeps_serving() {
    let _timing = timing();
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let good: Value = to_request_json(&samples[0]).unwrap();
    assert!(good["images"][0]["kind"] == "map", "{}", good["images"][0]);
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let o = ServeOptions {
            max_samples: 4,
            max_queue_samples: 4,
            max_batch: 64,
            max_wait_ms: 2000,
            request_timeout_ms: 4000,
            header_timeout_ms: 300,
            token: Some("tok".into()),
            ..Default::default()
        };
        let mut srv = start(&bundle, o).await;
        let c = reqwest::Client::new();
        let t = Some("tok");
        // A map raster whose header claims 16000 x 16000 pixels: refused from its header.
        let mut bomb = good.clone();
        bomb["images"][0]["png_base64"] = json!(png_claiming_base64(16_000));
        let (s, v) = post(&c, &srv.url, body(&bomb), t).await;
        assert_eq!(s, 422, "{v}");
        assert!(v["field"].as_str().unwrap().starts_with("images[0]"), "{v}");
        assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");
        // The same bomb as a photo the model does not read: never decoded.
        let mut photo = good.clone();
        photo["images"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "photo", "png_base64": png_claiming_base64(16_000)}));
        let (s, v) = post(&c, &srv.url, body(&photo), t).await;
        assert_eq!(s, 200, "{v}");
        // More samples than a request may carry.
        let five = Value::Array(vec![good.clone(); 5]);
        let (s, v) = post(&c, &srv.url, body(&five), t).await;
        assert_eq!(s, 413, "{v}");
        assert!(v["error"].as_str().unwrap().contains("at most 4"), "{v}");
        // A full queue: 4 samples wait 2 s for company (readiness says the queue is full); one
        // more is turned away with 503 and Retry-After, and the first request is still answered.
        let four = Value::Array(vec![good.clone(); 4]);
        let (c2, url2, b4) = (c.clone(), srv.url.clone(), body(&four));
        let first = tokio::spawn(async move { post(&c2, &url2, b4, Some("tok")).await });
        let t0 = std::time::Instant::now();
        // The queue stays full for the 2 s the samples wait, from whenever the request arrives
        // (late on a loaded machine): watch until then, not for a fixed time after sending.
        loop {
            let r = c.get(format!("{}/readyz", srv.url)).send().await.unwrap();
            if r.status().as_u16() == 503 {
                break;
            }
            if first.is_finished() {
                let (status, v) = first.await.unwrap();
                panic!("the queue never filled: the first request was answered first ({status}: {v})");
            }
            assert!(t0.elapsed().as_secs_f64() < 30.0, "the queue never filled");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let r = c
            .post(format!("{}/v1/predict", srv.url))
            .bearer_auth("tok")
            .body(body(&good))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        assert_eq!(status, 503, "{}", r.text().await.unwrap());
        assert_eq!(retry.unwrap(), "1");
        assert_eq!(first.await.unwrap().0, 200);
        // The token is checked before the body is read: a 10 MB body announced without a token
        // gets 401 at once, the body never sent.
        let req = "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n".to_string();
        let (text, _) = raw(&srv.url, req.as_bytes(), std::time::Duration::from_secs(5)).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        // Slow headers (slowloris): the connection is closed after the header timeout.
        let t0 = std::time::Instant::now();
        let (_, closed) = raw(
            &srv.url,
            b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n",
            std::time::Duration::from_secs(10),
        )
        .await;
        assert!(closed && t0.elapsed().as_secs_f64() < 5.0, "slow headers cut");
        // A slow body: 408 after the request timeout.
        let req = "POST /v1/predict HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tok\r\ncontent-length: 100\r\n\r\n[";
        let t0 = std::time::Instant::now();
        let (text, _) = raw(&srv.url, req.as_bytes(), std::time::Duration::from_secs(15)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(t0.elapsed().as_secs_f64() < 10.0);
        // More stops than the model reads: the nearest are read, and the response names the rest.
        let cap = samples[0].stops.len().max(1);
        let mut many = good.clone();
        let first_stop = many["stops"][0].clone();
        for k in 0..(9 - cap.min(8)) + 3 {
            let mut st = first_stop.clone();
            st["id"] = json!(format!("extra-{k}"));
            st["lat"] = json!(st["lat"].as_f64().unwrap() + 0.05 + 0.001 * k as f64);
            many["stops"].as_array_mut().unwrap().push(st);
        }
        let (s, v) = post(&c, &srv.url, body(&many), t).await;
        assert_eq!(s, 200, "{v}");
        let not_scored = v["stops_not_scored"].as_array().expect("named");
        assert!(!not_scored.is_empty(), "{v}");
        assert!(
            not_scored.iter().all(|x| x.as_str().unwrap().starts_with("extra-")),
            "the farthest stops are the ones not read: {not_scored:?}"
        );
        // Near the poles: refused, the field named.
        let mut polar = good.clone();
        for f in polar["history"].as_array_mut().unwrap() {
            f["lat"] = json!(89.5);
        }
        let (s, v) = post(&c, &srv.url, body(&polar), t).await;
        assert_eq!(s, 422, "{v}");
        assert!(v["field"].as_str().unwrap().contains("lat"), "{v}");
        // Model info tells no server path; liveness and readiness answer without a token.
        let info = c
            .get(format!("{}/v1/model", srv.url))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!info.contains(bundle.to_str().unwrap()), "{info}");
        for path in ["healthz", "readyz"] {
            let r = c.get(format!("{}/{path}", srv.url)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
        }
        // And good requests are still served.
        let (s, v) = post(&c, &srv.url, body(&good), t).await;
        assert_eq!(s, 200, "{v}");
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

#[test]
fn liveness_and_readiness_follow_the_model_thread_and_the_queue() {
    use axum::extract::State;
    use dfm::serve::handlers::{AppState, healthz, readyz};
    use std::sync::atomic::Ordering;
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let shared = Arc::new(dfm::serve::model_thread::Shared::default());
    let st = AppState {
        jobs: tx,
        metrics: Arc::new(dfm::serve::metrics::Metrics::default()),
        token_sha: None,
        info: Arc::new(json!({})),
        max_body: 1024,
        max_samples: 4,
        max_queue_samples: 8,
        limits: dfm::predict::RequestLimits {
            max_image_side: 256,
            max_horizon_s: 30.0,
            video: None,
        },
        shared: shared.clone(),
        codec: dfm::predict::Codec::new(
            dfm::features::Featurizer::new(&Default::default(), &Default::default(), 16),
            6,
        ),
        model_name: Arc::from("dfm"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        shared.alive.store(true, Ordering::SeqCst);
        assert_eq!(healthz(State(st.clone())).await.status().as_u16(), 200);
        assert_eq!(readyz(State(st.clone())).await.status().as_u16(), 200);
        shared.queued_samples.store(8, Ordering::SeqCst);
        assert_eq!(
            healthz(State(st.clone())).await.status().as_u16(),
            200,
            "busy, alive"
        );
        let r = readyz(State(st.clone())).await;
        assert_eq!(r.status().as_u16(), 503, "busy, not ready");
        assert!(r.headers().contains_key("retry-after"));
        shared.alive.store(false, Ordering::SeqCst);
        assert_eq!(
            healthz(State(st.clone())).await.status().as_u16(),
            503,
            "model thread gone"
        );
    });
}

/// Resident and peak resident memory of a process, kB (Linux `/proc`).
fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Load and faults against the real binary on loopback: `DFM_LOAD_REQUESTS` requests (default
/// 3,000; the full run is 100,000) at concurrency 64, mixing good, malformed, invalid, oversized,
/// slow and disconnecting clients. No good request gets a 5xx, the server never dies, its
/// resident memory stays bounded, and SIGTERM under load stops it cleanly.
#[cfg(target_os = "linux")]
#[test]
fn load_with_hostile_clients_keeps_good_requests_served_and_memory_bounded() {
    let _timing = timing();
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let total: u64 = std::env::var("DFM_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(dfm_bin())
        .args([
            "serve",
            "--model",
            bundle.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--max-body-bytes",
            "262144",
            "--header-timeout-ms",
            "500",
            "--request-timeout-ms",
            "5000",
            "--shutdown-grace-ms",
            "3000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 60, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let goods: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| serde_json::to_vec(&to_request_json(s).unwrap()).unwrap())
        .collect();
    let mut invalid: Value = serde_json::from_slice(&goods[0]).unwrap();
    invalid["history"][0]["lat"] = json!(123.0);
    let invalid = serde_json::to_vec(&invalid).unwrap();
    let goods = Arc::new(goods);
    let (next, good_5xx, good_ok, served, retried) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .pool_idle_timeout(std::time::Duration::from_millis(100))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (c, url, goods, invalid) = (c.clone(), url.clone(), goods.clone(), invalid.clone());
            let (next, good_5xx, good_ok, served, retried) = (
                next.clone(),
                good_5xx.clone(),
                good_ok.clone(),
                served.clone(),
                retried.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    // A pooled connection the server closed (idle, or after a 413) just as it
                    // was reused fails before any answer: a client retries those.
                    let send = |body: Vec<u8>| {
                        let (c, url, retried) = (c.clone(), url.clone(), retried.clone());
                        async move {
                            for _ in 0..4 {
                                match c
                                    .post(format!("{url}/v1/predict"))
                                    .header("content-type", "application/json")
                                    .body(body.clone())
                                    .send()
                                    .await
                                {
                                    Ok(r) => return Ok(r.status().as_u16()),
                                    Err(e) if e.is_request() => {
                                        retried.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Err(e) => return Err(e.to_string()),
                                }
                            }
                            Err("the connection failed 4 times".to_string())
                        }
                    };
                    match i % 10 {
                        // Good requests: one sample or a list of three.
                        0..=5 => {
                            let body = if i % 10 == 5 {
                                let v: Vec<Value> = (0..3)
                                    .map(|k| {
                                        serde_json::from_slice(
                                            &goods[(i as usize + k) % goods.len()],
                                        )
                                        .unwrap()
                                    })
                                    .collect();
                                serde_json::to_vec(&v).unwrap()
                            } else {
                                goods[i as usize % goods.len()].clone()
                            };
                            let s = send(body).await.expect("a good request is answered");
                            if s >= 500 {
                                good_5xx.fetch_add(1, Ordering::SeqCst);
                            } else if s == 200 {
                                good_ok.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        6 => assert_eq!(send(b"{\"key\": ".to_vec()).await, Ok(400)),
                        7 => assert_eq!(send(invalid.clone()).await, Ok(422)),
                        8 => {
                            // Oversized: 413, or the connection cut while the body is still sent.
                            if let Ok(s) = send(vec![b' '; 300_000]).await {
                                assert_eq!(s, 413);
                            }
                        }
                        _ => {
                            // Slow headers, or a client that sends a request and leaves.
                            let mut req = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n".to_vec();
                            let slow = i % 20 == 9;
                            if !slow {
                                let g = &goods[0];
                                req.extend_from_slice(
                                    format!("content-length: {}\r\n\r\n", g.len()).as_bytes(),
                                );
                                req.extend_from_slice(g);
                            }
                            use tokio::io::AsyncWriteExt;
                            let addr = url.trim_start_matches("http://").to_string();
                            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                            let _ = s.write_all(&req).await;
                            if slow {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            drop(s);
                        }
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let (rss, peak) = rss_kb(child.id());
    println!(
        "load: {total} requests in {secs:.1} s ({:.0}/s), good 200: {}, good 5xx: {}, connection retries: {}, server RSS {} MB (peak {} MB)",
        total as f64 / secs,
        good_ok.load(Ordering::SeqCst),
        good_5xx.load(Ordering::SeqCst),
        retried.load(Ordering::SeqCst),
        rss / 1024,
        peak / 1024
    );
    assert_eq!(served.load(Ordering::SeqCst), total);
    assert_eq!(
        good_5xx.load(Ordering::SeqCst),
        0,
        "no 5xx for good requests"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server is alive");
    assert!(
        rss > 0 && rss < 1024 * 1024,
        "resident memory {rss} kB within 1 GiB"
    );
    // SIGTERM under load: clients keep sending while the server stops; it exits cleanly.
    let load = std::thread::spawn({
        let goods = goods.clone();
        move || {
            for i in 0..200 {
                let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(s) => s,
                    Err(_) => break,
                };
                let g = &goods[i % goods.len()];
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!(
                        "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                        g.len()
                    )
                    .as_bytes(),
                );
                let _ = std::io::Write::write_all(&mut s, g);
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed().as_secs() < 30,
            "SIGTERM under load must stop the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    load.join().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

/// Concurrent requests share forward passes, never more than `max_batch` samples each.
#[test]
fn concurrent_requests_are_batched_up_to_max_batch() {
    let _timing = timing();
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let body = serde_json::to_vec(&to_request_json(&samples[0]).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let o = ServeOptions {
            max_batch: 4,
            max_wait_ms: 300,
            ..Default::default()
        };
        let mut srv = start(&bundle, o).await;
        let c = reqwest::Client::new();
        let mut reqs = Vec::new();
        for _ in 0..12 {
            let (c, url, b) = (c.clone(), srv.url.clone(), body.clone());
            reqs.push(tokio::spawn(async move { post(&c, &url, b, None).await.0 }));
        }
        for r in reqs {
            assert_eq!(r.await.unwrap(), 200);
        }
        let m = c
            .get(format!("{}/metrics", srv.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count = |name: &str| -> u64 {
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {m}"))
        };
        let passes = count("dfm_batch_size_count");
        assert_eq!(count("dfm_samples_total"), 12);
        assert!(
            passes < 12,
            "requests shared forward passes ({passes} for 12 samples)"
        );
        assert_eq!(
            count("dfm_batch_size_bucket{le=\"4\"}"),
            passes,
            "no pass over max_batch"
        );
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

/// One Parquet row read back: mode probabilities, per-stop P50 ETAs, the delivered probability
/// and the next-stop ranking.
type ParquetRow = (Vec<f64>, Vec<f64>, f64, Vec<String>);

/// Every row of the Parquet files in `dir`, by key (read with the parquet crate's reader);
/// fails on a key seen twice.
fn parquet_rows(dir: &Path) -> std::collections::BTreeMap<String, ParquetRow> {
    use arrow_array::{Array, Float64Array, ListArray, StringArray};
    let mut rows = std::collections::BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        assert_eq!(
            f.extension().unwrap(),
            "parquet",
            "only finished files: {f:?}"
        );
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let col = |name: &str| b.column_by_name(name).unwrap().clone();
            let (key, delivered) = (col("key"), col("delivered_probability"));
            let key = key.as_any().downcast_ref::<StringArray>().unwrap();
            let delivered = delivered.as_any().downcast_ref::<Float64Array>().unwrap();
            let list = |name: &str, i: usize| -> Vec<f64> {
                let c = col(name);
                let l = c.as_any().downcast_ref::<ListArray>().unwrap().value(i);
                l.as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            };
            let names = |name: &str, i: usize| -> Vec<String> {
                let c = col(name);
                let l = c.as_any().downcast_ref::<ListArray>().unwrap().value(i);
                let s = l.as_any().downcast_ref::<StringArray>().unwrap();
                (0..s.len()).map(|j| s.value(j).to_string()).collect()
            };
            for i in 0..b.num_rows() {
                let row = (
                    list("mode_probability", i),
                    list("eta_p50_s", i),
                    delivered.value(i),
                    names("next_stop_ranking", i),
                );
                let k = key.value(i).to_string();
                assert!(rows.insert(k.clone(), row).is_none(), "{k} twice");
            }
        }
    }
    rows
}

fn near(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + x.abs()))
}

/// `dfm predict --data` writes a split as Parquet that the parquet crate reads back, one row per
/// sample, with the predictions `dfm predict --input` gives for the same samples; two array-job
/// parts (`--shard-index 0|1 --num-shards 2`) hold exactly the one-process rows between them.
#[test]
fn predict_over_a_dataset_writes_parquet_and_its_parts_cover_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, _) = setup(tmp.path());
    let data = bundle.parent().unwrap().join("world61");
    let m = Manifest::load(&data).unwrap();
    assert!(
        m.splits["test"].shards.len() >= 2,
        "a split of several shards"
    );
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    let predict = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            bundle.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "flex",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = dfm(&args);
        (ok, err)
    };
    let (ok, said) = predict(&whole, &["--batch-size", "7"]);
    assert!(ok && said.contains("samples/s"), "{said}");
    for part in [
        &["--shard-index", "0", "--num-shards", "2", "--workers", "3"][..],
        &["--shard-index", "1", "--num-shards", "2"],
    ] {
        let (ok, err) = predict(&parts, part);
        assert!(ok, "{err}");
    }
    let (a, b) = (parquet_rows(&whole), parquet_rows(&parts));
    assert_eq!(a.len(), m.splits["test"].samples, "one row per sample");
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (x, y)) in a.iter().map(|(k, x)| (k, (x, &b[k]))) {
        assert!(near(&x.0, &y.0) && near(&x.1, &y.1), "{k}: {x:?} vs {y:?}");
        assert!(near(&[x.2], &[y.2]), "{k}");
    }

    // The same samples as requests: the same predictions.
    let lines = tmp.path().join("samples.jsonl");
    let (ok, _, err) = dfm(&[
        "data",
        "sample",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "test",
        "--limit",
        "6",
        "--out",
        lines.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = dfm(&[
        "predict",
        "--model",
        bundle.to_str().unwrap(),
        "--input",
        lines.to_str().unwrap(),
        "--device",
        "flex",
    ]);
    assert!(ok, "{err}");
    for line in out.lines() {
        let p: Value = serde_json::from_str(line).unwrap();
        let row = &a[p["key"].as_str().unwrap()];
        let probs: Vec<f64> = p["modes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["probability"].as_f64().unwrap())
            .collect();
        let eta: Vec<f64> = p["stops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["eta_p50_s"].as_f64().unwrap())
            .collect();
        assert!(
            near(&probs, &row.0) && near(&eta, &row.1),
            "{line}\nvs {row:?}"
        );
        assert_eq!(p["next_stop_ranking"], json!(row.3));
    }

    // A part index outside the parts is refused, naming both flags.
    let (ok, err) = predict(&parts, &["--shard-index", "2", "--num-shards", "2"]);
    assert!(
        !ok && err.contains("--shard-index 2 must be below --num-shards 2"),
        "{err}"
    );

    // --out naming a file: the error names it.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (ok, err) = predict(&file, &[]);
    assert!(!ok && err.contains(file.to_str().unwrap()), "{err}");
    // A job that fails half way (a truncated shard) leaves no partial file.
    let cut = tmp.path().join("cut");
    copy_dir(&data, &cut);
    let last = cut.join(&m.splits["test"].shards.last().unwrap().file);
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = tmp.path().join("cut-out");
    let mut args = vec!["predict", "--model", bundle.to_str().unwrap(), "--data"];
    args.extend([
        cut.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "flex",
    ]);
    let (ok, _, err) = dfm(&args);
    let name = last.file_name().unwrap().to_str().unwrap();
    assert!(!ok && err.contains(name), "{err}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "nothing left in {}",
        out.display()
    );
}
