//! `dfm bench train`: the FLOPs it reports are the config's count, its MFU is achieved over the
//! measured peak, its step profile adds up, it computes in `train.precision`, and the CLI writes
//! the documented JSON keys; `--whole-run` times the trainer's own loop window by window. (No
//! timing is asserted: figures depend on the machine.)

mod common;
use common::*;
use dfm::config::Config;
use dfm::model::flops;

#[test]
fn bench_train_reports_consistent_figures_and_json_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 61);
    let toml = format!(
        r#"
[run]
name = "bench"
device = "flex"
[data]
path = "{}"
image_size = 16
workers = 1
shuffle_buffer = 64
[model]
d_model = 32
layers = 1
heads = 2
ff_mult = 2
[train]
batch_size = 8
"#,
        data.display()
    );
    let cfg_path = tmp.path().join("bench.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let json = tmp.path().join("bench.json");
    let (ok, stdout, err) = dfm(&[
        "bench",
        "train",
        "--config",
        cfg_path.to_str().unwrap(),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--matmul-size",
        "128",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{err}");
    assert!(
        stdout.contains("MFU") && stdout.contains("slowest"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for k in [
        "samples_per_s",
        "mfu",
        "flops_per_sample",
        "peak_flops",
        "tokens_per_s",
    ] {
        assert!(
            v[k].as_f64().is_some_and(|x| x > 0.0 && x.is_finite()),
            "{k}: {}",
            v[k]
        );
    }
    // FLOPs come from the config: 3 x the forward count.
    let cfg = Config::load(Some(&cfg_path), &[]).unwrap();
    let spec = dfm::data::manifest::Manifest::load(&data).unwrap().spec;
    let fwd = flops::forward_flops(&cfg.model, &spec, 16, flops::Work::Supervised);
    assert_eq!(v["flops_per_sample"].as_f64().unwrap(), 3.0 * fwd);
    assert_eq!(
        v["tokens_per_sample"].as_u64().unwrap() as usize,
        flops::tokens(&cfg.model, &spec, 16).total
    );
    assert_eq!(v["precision"], "f32");
    // The step computes in `train.precision`, as `dfm train` does: flex refuses bf16.
    let (ok, _, err) = dfm(&[
        "bench",
        "train",
        "--config",
        cfg_path.to_str().unwrap(),
        "--set",
        "train.precision=\"bf16\"",
        "--steps",
        "1",
    ]);
    assert!(!ok && err.contains("needs a GPU device"), "{err}");
    let f = |k: &str| v[k].as_f64().unwrap();
    assert!((f("mfu") - f("achieved_flops") / f("peak_flops")).abs() < 1e-12);
    assert!((f("achieved_flops") - f("flops_per_sample") * f("samples_per_s")).abs() < 1e-3);
    let p = &v["profile"];
    let parts: f64 = ["data_ms", "forward_ms", "backward_ms", "optimizer_ms"]
        .iter()
        .map(|k| p[k].as_f64().unwrap())
        .sum();
    let step = p["step_ms"].as_f64().unwrap();
    assert!(
        parts <= step * 1.01 + 0.01 && parts >= step * 0.5,
        "{parts} vs {step}"
    );
    // An independent count from the real model's parameters: every fusion weight multiplies
    // every token (2 FLOPs per multiply-add), and each layer's attention scores and mix are
    // T^2 x d multiply-adds each; the counted transformer terms agree within 5% (layer norms'
    // few parameters, counted here as if they multiplied, and biases are the difference).
    let setup = dfm::train::Setup::new(cfg.clone()).unwrap();
    let model = setup.new_model(&burn::tensor::Device::flex());
    let t = model.token_count(spec.max_stops) as f64;
    let d = cfg.model.d_model as f64;
    let fusion = burn::module::Module::num_params(&model.enc.fusion) as f64;
    let floor = 2.0 * fusion * t + cfg.model.layers as f64 * 4.0 * t * t * d;
    let counted: f64 = flops::terms(&cfg.model, &spec, 16, flops::Work::Supervised)
        .iter()
        .filter(|x| x.name.starts_with("layer "))
        .map(|x| x.flops)
        .sum();
    assert!(
        (counted - floor).abs() <= 0.05 * floor,
        "the transformer's counted FLOPs {counted} against {floor} from its parameters"
    );
    assert!(
        fwd > counted,
        "the whole model counts more than its transformer"
    );
    assert_eq!(
        t as usize,
        flops::tokens(&cfg.model, &spec, 16).total,
        "the count's tokens are the model's"
    );
}

#[test]
fn bench_train_whole_run_reports_every_window_of_a_replicated_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 62);
    let json = tmp.path().join("run.json");
    let mut args: Vec<String> = [
        "bench",
        "train",
        "--config",
        "configs/quickstart.toml",
        "--device",
        "flex",
        "--whole-run",
        "--steps",
        "40",
        "--window",
        "10",
        "--json",
        json.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sets = [
        format!("data.path={}", data.display()),
        "train.replicas=2".into(),
        "eval.split=val".into(),
    ];
    for kv in sets.iter().chain(&tiny_model()) {
        args.extend(["--set".to_string(), kv.clone()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, err) = dfm(&argv);
    assert!(ok, "{stdout}\n{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["replicas"], 2);
    let windows = v["windows"].as_array().unwrap();
    let steps: Vec<u64> = windows.iter().map(|w| w[0].as_u64().unwrap()).collect();
    assert_eq!(steps, [10, 20, 30, 40], "one rate per window of the run");
    let rate = |i: usize| windows[i][1].as_f64().unwrap();
    assert!((0..4).all(|i| rate(i) > 0.0 && rate(i).is_finite()));
    let ratio = v["last_over_first"].as_f64().unwrap();
    assert!((ratio - rate(3) / rate(0)).abs() < 1e-9);
    let verdict = if (ratio - 1.0).abs() <= 0.10 {
        "holds within 10%"
    } else {
        "does not hold"
    };
    assert!(stdout.contains(verdict), "{stdout}");
    // Too short a run for two windows is refused, naming the flags.
    let (ok, _, err) = dfm(&[
        "bench",
        "train",
        "--config",
        "configs/quickstart.toml",
        "--whole-run",
        "--steps",
        "5",
        "--window",
        "10",
    ]);
    assert!(
        !ok && err.contains("--steps 5") && err.contains("--window 10"),
        "{err}"
    );
}
