"""Talks to `dfm serve` through PyPI's tritonclient[http], as a Triton or KServe user would:
server liveness and readiness, model readiness and metadata, then `infer` on the samples of a
JSON-lines file (binary tensors, tritonclient's default). Prints each sample's prediction
(the `prediction` output) as one JSON line; fails on anything the protocol does not promise.

usage: triton_client.py HOST:PORT MODEL TOKEN SAMPLES.jsonl
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    host, model, token, path = sys.argv[1:5]
    auth = {"Authorization": f"Bearer {token}"}
    client = httpclient.InferenceServerClient(url=host)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model, headers=auth), "model not ready"
    meta = client.get_model_metadata(model, headers=auth)
    assert meta["name"] == model, meta
    assert [i["name"] for i in meta["inputs"]] == ["samples"], meta
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["prediction"]["datatype"] == "BYTES", meta
    assert outputs["mode_probability"]["datatype"] == "FP64", meta

    with open(path, encoding="utf-8") as f:
        samples = [line.strip() for line in f if line.strip()]
    tensor = np.array([s.encode() for s in samples], dtype=np.object_)
    inp = httpclient.InferInput("samples", [len(samples)], "BYTES")
    inp.set_data_from_numpy(tensor)  # binary tensor data, tritonclient's default
    asked = [httpclient.InferRequestedOutput(n) for n in ("prediction", "mode_probability")]
    result = client.infer(model, [inp], outputs=asked, headers=auth)
    preds = result.as_numpy("prediction")
    probs = result.as_numpy("mode_probability")
    assert preds.shape == (len(samples),), preds.shape
    assert probs.shape[0] == len(samples) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), probs
    for p, row in zip(preds, probs):
        p = json.loads(p)
        assert np.allclose([m["probability"] for m in p["modes"]], row), (p, row)
        print(json.dumps(p))


if __name__ == "__main__":
    main()
