//! The Open Inference Protocol (KServe v2) and SageMaker's contract in `dfm serve`: health,
//! metadata and `infer` (JSON and binary tensors) answer what `/v1/predict` answers, behind the
//! same token; bad elements get a 4xx naming them; and a client nobody here wrote, PyPI's
//! `tritonclient[http]`, gets the same predictions.

mod common;
use common::serving::*;
use common::*;
use dfm::predict::to_request_json;
use dfm::serve::ServeOptions;
use serde_json::{Value, json};
use std::path::Path;

const TOKEN: &str = "v2-test-token";

fn options() -> ServeOptions {
    ServeOptions {
        token: Some(TOKEN.into()),
        model_name: "eta-model".into(),
        sagemaker: true,
        model_workers: 2,
        ..Default::default()
    }
}

fn sample_strings(samples: &[dfm::Sample]) -> Vec<String> {
    samples
        .iter()
        .map(|s| serde_json::to_string(&to_request_json(s).unwrap()).unwrap())
        .collect()
}

async fn send(
    c: &reqwest::Client,
    req: reqwest::RequestBuilder,
    auth: bool,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let req = if auth { req.bearer_auth(TOKEN) } else { req };
    let resp = c.execute(req.build().unwrap()).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

/// The output tensor `name` of an infer answer.
fn output<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {answer}"))
}

/// The `prediction` output's elements, parsed.
fn predictions(answer: &Value) -> Vec<Value> {
    output(answer, "prediction")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e.as_str().unwrap()).unwrap())
        .collect()
}

/// The binary tensor extension's body: the JSON, then each element as a u32 length and bytes.
fn binary_body(elements: &[String]) -> (Vec<u8>, usize) {
    let mut tensor = Vec::new();
    for e in elements {
        tensor.extend((e.len() as u32).to_le_bytes());
        tensor.extend(e.as_bytes());
    }
    let header = json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [elements.len()],
        "parameters": {"binary_data_size": tensor.len()}}]});
    let mut body = serde_json::to_vec(&header).unwrap();
    let n = body.len();
    body.extend(tensor);
    (body, n)
}

#[test]
fn open_inference_protocol_and_sagemaker_answer_what_v1_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let elements = sample_strings(&samples);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut srv = start(&bundle, options()).await;
        let (url, c) = (srv.url.clone(), reqwest::Client::new());
        let body = format!("[{}]", elements.join(","));
        let (st, v1) = post(&c, &url, body.clone().into_bytes(), Some(TOKEN)).await;
        assert_eq!(st, 200, "{v1}");
        let v1 = v1.as_array().unwrap().clone();

        // Health needs no token, as probes send none; the model's endpoints do.
        for path in ["/v2/health/live", "/v2/health/ready", "/v2", "/ping"] {
            let (st, _, _) = send(&c, c.get(format!("{url}{path}")), false).await;
            assert_eq!(st, 200, "{path}");
        }
        let (st, _, _) = send(&c, c.get(format!("{url}/v2/models/eta-model")), false).await;
        assert_eq!(st, 401);
        let (st, meta, _) = send(&c, c.get(format!("{url}/v2/models/eta-model")), true).await;
        assert_eq!(st, 200);
        assert_eq!(
            meta["inputs"][0],
            json!({"name": "samples", "datatype": "BYTES", "shape": [-1]})
        );
        assert_eq!(
            output(&meta, "modes_lat_lon")["shape"],
            json!([-1, 6, -1, 2])
        );
        let (st, other, _) = send(&c, c.get(format!("{url}/v2/models/other")), true).await;
        assert_eq!(st, 404);
        assert!(
            other["error"].as_str().unwrap().contains("eta-model"),
            "{other}"
        );
        let v2 = format!("{url}/v2/models/eta-model/versions/2");
        let (st, e, _) = send(&c, c.get(v2), true).await;
        assert!(
            st == 404 && e["error"].as_str().unwrap().contains("version 1 only"),
            "{e}"
        );

        // infer, as JSON: every output, the same predictions as /v1.
        let req = json!({"id": "r1", "inputs": [{"name": "samples", "datatype": "BYTES",
            "shape": [elements.len()], "data": elements}]});
        let infer = format!("{url}/v2/models/eta-model/infer");
        let (st, a, _) = send(&c, c.post(&infer).json(&req), true).await;
        assert_eq!(st, 200, "{a}");
        assert_eq!(
            (a["id"].as_str(), a["model_name"].as_str()),
            (Some("r1"), Some("eta-model"))
        );
        let got = predictions(&a);
        assert!(got.iter().zip(&v1).all(|(g, w)| close(g, w)) && got.len() == v1.len());
        check_numeric_outputs(&a, &v1);

        // The binary tensor extension, on the versioned path, one output asked for.
        let (mut bin, n) = binary_body(&elements);
        let header: Value = serde_json::from_slice(&bin[..n]).unwrap();
        let mut header = header;
        header["outputs"] = json!([{"name": "prediction"}]);
        let head = serde_json::to_vec(&header).unwrap();
        bin.splice(..n, head.iter().copied());
        let versioned = format!("{url}/v2/models/eta-model/versions/1/infer");
        let r = c
            .post(&versioned)
            .header("Inference-Header-Content-Length", head.len());
        let (st, b, _) = send(&c, r.body(bin), true).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["outputs"].as_array().unwrap().len(), 1);
        assert!(predictions(&b).iter().zip(&v1).all(|(g, w)| close(g, w)));

        // SageMaker's /invocations is /v1/predict.
        let r = c
            .post(format!("{url}/invocations"))
            .header("content-type", "application/json");
        let (st, sm, _) = send(&c, r.body(body), true).await;
        assert_eq!(st, 200);
        assert!(
            sm.as_array()
                .unwrap()
                .iter()
                .zip(&v1)
                .all(|(g, w)| close(g, w))
        );

        bad_requests_name_what_is_wrong(&c, &url, &elements).await;
        // The v2 answers are counted with /v1's.
        let r = c
            .get(format!("{url}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let metrics = r.text().await.unwrap();
        assert!(
            metrics.contains("dfm_requests_total{code=\"422\"} 1"),
            "{metrics}"
        );
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

/// The numeric outputs carry the same numbers as the `/v1` answers, in row-major order.
fn check_numeric_outputs(a: &Value, v1: &[Value]) {
    let n = v1.len();
    let k = v1[0]["modes"].as_array().unwrap().len();
    let h = v1[0]["horizons_s"].as_array().unwrap().len();
    let probs = output(a, "mode_probability");
    assert_eq!(probs["shape"], json!([n, k]));
    assert_eq!(probs["data"][k + 1], v1[1]["modes"][1]["probability"]);
    let modes = output(a, "modes_lat_lon");
    assert_eq!(modes["shape"], json!([n, k, h, 2]));
    let i = ((k + 2) * h + 1) * 2 + 1; // sample 1, mode 2, horizon 1, longitude
    assert_eq!(modes["data"][i], v1[1]["modes"][2]["lat_lon"][1][1]);
    let ml = output(a, "most_likely_lat_lon");
    assert_eq!(
        ml["data"][(h + 3) * 2],
        v1[1]["most_likely"]["lat_lon"][3][0]
    );
    assert_eq!(output(a, "key")["data"][1], v1[1]["key"]);
    assert_eq!(
        output(a, "delivered_probability")["data"][1],
        v1[1]["delivered_probability"]
    );
}

async fn bad_requests_name_what_is_wrong(c: &reqwest::Client, url: &str, elements: &[String]) {
    let infer = format!("{url}/v2/models/eta-model/infer");
    let mut broken: Value = serde_json::from_str(&elements[0]).unwrap();
    broken["history"][0]["lat"] = json!(123.0);
    let mut els = elements[..3].to_vec();
    els[2] = broken.to_string();
    let cases = [
        (
            json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [3], "data": els}]}),
            422,
            "samples[2].history",
        ),
        (
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
            400,
            "\"samples\"",
        ),
        (
            json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [4], "data": &elements[..3]}]}),
            400,
            "the shape says 4",
        ),
        (
            json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [1], "data": ["{"]}]}),
            400,
            "samples[0]",
        ),
        (
            json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [1], "data": [&elements[0]]}], "outputs": [{"name": "eta"}]}),
            400,
            "no output named",
        ),
        (
            json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [1], "data": [["{}", ["{}", "{}"]]]}]}),
            400,
            "the data holds more",
        ),
        (json!({"inputs": []}), 400, "one input"),
    ];
    for (req, want, says) in cases {
        let (st, e, _) = send(c, c.post(&infer).json(&req), true).await;
        let msg = format!("{} {}", e["field"], e["error"].as_str().unwrap_or(""));
        assert!(st == want && msg.contains(says), "{req}: {st} {msg}");
    }
    // A binary length past the end of the body.
    let (bin, n) = binary_body(&elements[..1]);
    let r = c
        .post(&infer)
        .header("Inference-Header-Content-Length", n + bin.len());
    let (st, e, _) = send(c, r.body(bin), true).await;
    assert!(
        st == 400
            && e["error"]
                .as_str()
                .unwrap()
                .contains("longer than the body"),
        "{e}"
    );
    // The server goes on serving.
    let ok = json!({"inputs": [{"name": "samples", "datatype": "BYTES", "shape": [1], "data": [&elements[0]]}]});
    assert_eq!(send(c, c.post(&infer).json(&ok), true).await.0, 200);
}

/// A Python with `tritonclient[http]` (CI installs it), or None.
fn python_with_tritonclient() -> Option<String> {
    let python = std::env::var("DFM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn tritonclient_gets_health_metadata_and_the_v1_predictions() {
    let Some(python) = python_with_tritonclient() else {
        return skip(
            "no Python with tritonclient[http] and numpy (pip install 'tritonclient[http]')",
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, samples) = setup(tmp.path());
    let elements = sample_strings(&samples[..5]);
    let input = tmp.path().join("samples.jsonl");
    std::fs::write(&input, elements.join("\n") + "\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut srv = start(&bundle, options()).await;
        let c = reqwest::Client::new();
        let body = format!("[{}]", elements.join(","));
        let (st, v1) = post(&c, &srv.url, body.into_bytes(), Some(TOKEN)).await;
        assert_eq!(st, 200);
        let out = run_client(&python, &srv.url, &input).await;
        let got: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let v1 = v1.as_array().unwrap();
        assert_eq!(got.len(), v1.len(), "{out}");
        assert!(
            got.iter().zip(v1).all(|(g, w)| close(g, w)),
            "tritonclient's predictions differ from /v1's"
        );
        srv.stop.take().unwrap().send(()).unwrap();
        srv.handle.await.unwrap().unwrap();
    });
}

/// Runs `tests/python/triton_client.py` against the server; its standard output.
async fn run_client(python: &str, url: &str, input: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/triton_client.py");
    let host = url.trim_start_matches("http://").to_string();
    let (python, input) = (python.to_string(), input.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&host, "eta-model", TOKEN])
            .arg(input)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the tritonclient script failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}
