"""The Python package against dfm itself. `tests/python_package.rs` (cargo test) trains and
exports a tiny model, writes the test split's samples as JSON lines, runs `dfm predict` on them
and starts `dfm serve`, then runs this suite with what it made in the environment:

DFM_TEST_BUNDLE    the exported bundle
DFM_TEST_DATA      the dataset folder (its test split holds the samples)
DFM_TEST_SAMPLES   the samples, JSON lines (request form)
DFM_TEST_EXPECTED  `dfm predict --input DFM_TEST_SAMPLES`'s output
DFM_TEST_SERVER    the server's URL; DFM_TEST_TOKEN its bearer token
DFM_TEST_BUNDLE_OPTIONS  a bundle with the support guard, the next-stop prior and relative
                   offsets (the ONNX graph's optional parts)
DFM_TEST_BUNDLE_VIDEO, DFM_TEST_DATA_VIDEO  a model that reads dashcam clips, and its dataset
"""

import copy
import json
import os
import urllib.request

import numpy as np
import pytest

import dfm

ENV = {k: os.environ.get(k) for k in (
    "DFM_TEST_BUNDLE", "DFM_TEST_DATA", "DFM_TEST_SAMPLES", "DFM_TEST_EXPECTED",
    "DFM_TEST_SERVER", "DFM_TEST_TOKEN", "DFM_TEST_BUNDLE_OPTIONS", "DFM_TEST_BUNDLE_VIDEO",
    "DFM_TEST_DATA_VIDEO")}
if not all(ENV.values()):
    pytest.skip("run through `cargo test --release --test python_package`, which sets DFM_TEST_*",
                allow_module_level=True)


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def model():
    return dfm.load(ENV["DFM_TEST_BUNDLE"])


@pytest.fixture(scope="module")
def samples():
    return jsonl(ENV["DFM_TEST_SAMPLES"])


@pytest.fixture(scope="module")
def expected():
    return jsonl(ENV["DFM_TEST_EXPECTED"])


def test_predict_equals_dfm_predict_field_by_field(model, samples, expected):
    got = model.predict(samples)
    assert len(got) == len(expected) == len(samples) > 0
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"sample {i}: {sorted(k for k in e if g.get(k) != e[k])} differ"
    # Batch size changes nothing on the CPU; one dict in, one dict out.
    assert model.predict(samples, batch_size=1) == expected
    assert model.predict(samples[0]) == expected[0]


def test_one_model_serves_several_threads(model, samples, expected):
    from concurrent.futures import ThreadPoolExecutor

    parts = [samples[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(model.predict, parts))
    assert got == [expected[i::4] for i in range(4)]


def test_predict_reads_a_jsonl_path_and_a_dataframe(model, samples, expected):
    assert model.predict(ENV["DFM_TEST_SAMPLES"]) == expected
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(samples)
    out = model.predict(frame)
    assert isinstance(out, pd.DataFrame) and len(out) == len(expected)
    assert out.to_dict(orient="records") == pd.DataFrame(expected).to_dict(orient="records")


def test_a_bad_sample_raises_naming_the_sample_and_field(model, samples):
    bad = copy.deepcopy(samples[:3])
    bad[2]["history"][1]["lat"] = 123.0
    with pytest.raises(dfm.DfmError) as e:
        model.predict(bad)
    msg = str(e.value)
    assert "sample 2" in msg and "history[1].lat" in msg, msg
    assert isinstance(e.value, ValueError)
    with pytest.raises(dfm.DfmError, match="not list"):
        model.predict([[1, 2]])


def test_a_bad_line_in_a_file_names_the_file_and_line(model, samples, tmp_path):
    p = tmp_path / "bad.jsonl"
    bad = copy.deepcopy(samples[1])
    bad["history"][0]["lon"] = "east"
    p.write_text(json.dumps(samples[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(dfm.DfmError) as e:
        model.predict(p)
    msg = str(e.value)
    assert "bad.jsonl" in msg and "line 2" in msg and "history[0].lon" in msg, msg


def test_features_of_a_file_read_as_dfm_reads_it(model, samples, tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps(s) for s in samples[:3]) + "\n\n")
    assert np.array_equal(model.features(p)["hist"], model.features(samples[:3])["hist"])
    p.write_text(json.dumps(samples[0]) + "\n{oops\n")
    with pytest.raises(dfm.DfmError, match="line 2"):
        model.features(p)
    with pytest.raises(dfm.DfmError, match="nosuch"):
        model.outputs(tmp_path / "nosuch.jsonl")


def test_a_missing_bundle_raises_naming_it(tmp_path):
    with pytest.raises(dfm.DfmError, match="nowhere"):
        dfm.load(tmp_path / "nowhere")


def server_features(samples):
    body = json.dumps(samples).encode()
    req = urllib.request.Request(ENV["DFM_TEST_SERVER"] + "/v1/features", data=body, headers={
        "content-type": "application/json", "authorization": "Bearer " + ENV["DFM_TEST_TOKEN"]})
    with urllib.request.urlopen(req, timeout=60) as r:
        inputs = json.load(r)["inputs"]
    return {a["name"]: np.asarray(a["data"], dtype=np.float32).reshape(a["shape"]) for a in inputs}


def test_features_equal_the_servers(model, samples):
    mine = dfm.features(samples, model)
    theirs = server_features(samples)
    assert sorted(mine) == sorted(theirs)
    n = len(samples)
    for name, a in mine.items():
        assert a.dtype == np.float32 and a.shape[0] == n, (name, a.shape)
        assert a.shape == theirs[name].shape, name
        assert np.array_equal(a, theirs[name]), name
    assert mine["hist_mask"].sum() > 0 and mine["image_mask"].sum() > 0
    # From the bundle's path too.
    again = dfm.features(samples[:2], ENV["DFM_TEST_BUNDLE"])
    assert np.array_equal(again["hist"], mine["hist"][:2])


def test_read_dataset_gives_the_test_split_with_labels(samples):
    got = list(dfm.read_dataset(ENV["DFM_TEST_DATA"], "test"))
    assert len(got) >= len(samples)
    for s, g in zip(samples, got):
        assert g["key"] == s["key"]
        assert g.get("target") is not None, "labels are kept"
        g = {k: v for k, v in g.items() if k != "target"}
        assert g == {k: v for k, v in s.items() if k != "target"}
    with pytest.raises(dfm.DfmError, match="split"):
        dfm.read_dataset(ENV["DFM_TEST_DATA"], "nosuch")


def test_info_describes_the_model(model):
    info = model.info
    assert info["step"] > 0 and "spec" in info and "model" in info


def test_outputs_are_what_the_predictions_decode(model, samples, expected):
    out = model.outputs(samples)
    n = len(samples)
    k = len(expected[0]["modes"])
    assert out["traj"].shape[:2] == (n, k) and out["traj"].shape[3] == 2
    assert out["point"].shape == (n, out["traj"].shape[2], 2)
    assert np.allclose(out["mode_probability"].sum(axis=1), 1.0, atol=1e-5)
    for i, e in enumerate(expected):
        probs = sorted(out["mode_probability"][i].tolist(), reverse=True)
        assert np.allclose(probs, [m["probability"] for m in e["modes"]], atol=1e-6), i
        assert abs(out["delivered_probability"][i] - e["delivered_probability"]) < 1e-6, i
        listed = len(e["stops"])
        on_time = out["on_time_probability"][i][:listed]
        assert np.allclose(on_time, [s["on_time_probability"] for s in e["stops"]], atol=1e-6), i


@pytest.mark.parametrize("which", ["DFM_TEST_BUNDLE", "DFM_TEST_BUNDLE_OPTIONS",
                                   "DFM_TEST_BUNDLE_VIDEO"])
def test_onnx_export_runs_in_onnx_runtime_as_dfm(which, tmp_path):
    import itertools

    ort = pytest.importorskip("onnxruntime")
    bundle = ENV[which]
    path = dfm.export_onnx(bundle, tmp_path / "model.onnx")
    model = dfm.load(bundle)
    data = ENV["DFM_TEST_DATA_VIDEO" if which == "DFM_TEST_BUNDLE_VIDEO" else "DFM_TEST_DATA"]
    samples = list(itertools.islice(dfm.read_dataset(data, "all"), 256))
    assert len(samples) == 256
    inputs = dfm.features(samples, model)
    want = model.outputs(samples)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: inputs[i.name] for i in sess.get_inputs()})
    names = [o.name for o in sess.get_outputs()]
    assert sorted(names) == sorted(want)
    for name, g in zip(names, got):
        assert g.shape == want[name].shape, name
        d = float(np.abs(g - want[name]).max())
        assert d <= 1e-4, f"{name}: ONNX Runtime differs from dfm by {d}"
    # The options' branches are in the graph (they change what it computes).
    if which == "DFM_TEST_BUNDLE_VIDEO":
        assert inputs["video"].shape[1:] == (8, 32, 32, 3) and inputs["video_mask"].sum() > 0
    if which == "DFM_TEST_BUNDLE_OPTIONS":
        info = model.info["model"]
        assert info["support_guard"] and info["next_stop_prior"] and info["relative_offsets"]


def test_onnx_answers_at_a_requests_horizons(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    bundle = ENV["DFM_TEST_BUNDLE"]
    model = dfm.load(bundle)
    h = model.info["max_horizon_s"]
    samples = [dict(s, horizons_s=[h / 5, h / 2, h]) for s in jsonl(ENV["DFM_TEST_SAMPLES"])]
    inputs = dfm.features(samples, model)
    assert inputs["future_w"].shape[:2] == (len(samples), 3)
    want = model.outputs(samples)
    assert want["traj"].shape[2] == 3
    sess = ort.InferenceSession(dfm.export_onnx(bundle, tmp_path / "m.onnx"))
    defaults = [i.name for i in sess.get_overridable_initializers()]
    assert defaults == ["future_w"]
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    feed["future_w"] = inputs["future_w"]
    for name, g in zip([o.name for o in sess.get_outputs()], sess.run(None, feed)):
        assert g.shape == want[name].shape, name
        assert float(np.abs(g - want[name]).max()) <= 1e-4, name
