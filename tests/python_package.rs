//! The Python package (`pip install ./python`) against dfm itself: a tiny model trained and
//! exported, the test split's samples, `dfm predict`'s output for them and a running server are
//! handed to the pytest suite in `python/tests/` (predictions equal `dfm predict`'s field by
//! field, bad samples raise naming the field, `dfm.features` equals the server's
//! `/v1/features`, `dfm.read_dataset` reads the split, the ONNX export run by ONNX Runtime
//! equals dfm). Skips with a message where the package is not installed; CI installs it and
//! fails instead.

mod common;
use common::serving::*;
use common::*;
use dfm::serve::ServeOptions;
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "python-test-token";

/// A Python that imports the installed `dfm` package, pytest and ONNX Runtime (CI installs
/// them), or None.
fn python_with_dfm() -> Option<String> {
    let python = std::env::var("DFM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import dfm._dfm, numpy, pytest, onnx, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn the_python_package_predicts_what_dfm_predicts() {
    let Some(python) = python_with_dfm() else {
        return skip("the Python package is not installed (pip install './python[test]'; CI does)");
    };
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, _) = train_and_export(tmp.path());
    let data = tmp.path().join("world61");
    let samples = tmp.path().join("samples.jsonl");
    std::fs::write(
        &samples,
        dfm::predict::request_lines(&data, "test", 24).unwrap(),
    )
    .unwrap();
    let expected = tmp.path().join("expected.jsonl");
    let (ok, out, err) = dfm(&[
        "predict",
        "--model",
        bundle.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
        "--output",
        expected.to_str().unwrap(),
        "--device",
        "flex",
    ]);
    assert!(ok, "dfm predict: {out}\n{err}");
    // A second model with every optional part of the graph, for the ONNX export.
    let options = tmp.path().join("options");
    std::fs::create_dir_all(&options).unwrap();
    let extra = [
        "model.support_guard=true",
        "model.next_stop_prior=true",
        "model.relative_offsets=true",
    ];
    let (options_bundle, _) = train_and_export_with(&options, &extra);
    // And one that reads dashcam clips.
    let video = tmp.path().join("video");
    let video_data = video.join("world");
    let synth = tiny_config(62).with_video();
    dfm::data::synth::generate(&video_data, &synth, false).unwrap();
    let (video_bundle, _) = train_and_export_on(&video, &video_data, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = ServeOptions {
            token: Some(TOKEN.into()),
            ..Default::default()
        };
        let mut srv = start(&bundle, options).await;
        let env = [
            ("DFM_TEST_BUNDLE", bundle.clone()),
            ("DFM_TEST_DATA", data.clone()),
            ("DFM_TEST_SAMPLES", samples.clone()),
            ("DFM_TEST_EXPECTED", expected.clone()),
            ("DFM_TEST_BUNDLE_OPTIONS", options_bundle.clone()),
            ("DFM_TEST_BUNDLE_VIDEO", video_bundle.clone()),
            ("DFM_TEST_DATA_VIDEO", video_data.clone()),
        ];
        let url = srv.url.clone();
        let run = tokio::task::spawn_blocking(move || pytest(&python, &env, &url));
        let (ok, report) = run.await.unwrap();
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
        assert!(ok, "pytest python/tests failed:\n{report}");
        assert!(
            report.contains(" passed") && !report.contains("skipped"),
            "every test ran: {report}"
        );
    });
}

/// Runs the pytest suite with the test's files in the environment: (passed, its output).
fn pytest(python: &str, env: &[(&str, std::path::PathBuf)], url: &str) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(root.join("python/tests"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("DFM_TEST_SERVER", url)
        .env("DFM_TEST_TOKEN", TOKEN)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out.status.success(), text)
}
