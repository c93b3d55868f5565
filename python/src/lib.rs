//! The extension module behind the `dfm` Python package (`dfm._dfm`): thin glue over the dfm
//! crate, which parses and validates requests, computes the features and runs the model exactly
//! as `dfm predict` and `dfm serve` do. Samples and predictions cross as JSON text (the Python
//! side turns them into dicts or DataFrames); the model's inputs cross as f32 bytes and shapes
//! (NumPy arrays on the Python side).

use dfm::Sample;
use dfm::data::loader::{Epoch, Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::Path;
use std::sync::Arc;

create_exception!(
    _dfm,
    DfmError,
    PyValueError,
    "An error from dfm; its message names the file, the record or sample, and the field."
);

fn error(e: impl std::fmt::Display) -> PyErr {
    DfmError::new_err(e.to_string())
}

/// An anyhow error with its causes, as dfm's command line prints it.
fn error_chain(e: anyhow::Error) -> PyErr {
    DfmError::new_err(format!("{e:#}"))
}

/// One model input for Python: name, shape, little-endian f32 bytes.
type Array<'py> = (String, Vec<usize>, Bound<'py, PyBytes>);

/// A model loaded from an export bundle (or a run folder) on one device. Immutable and
/// thread-safe: Python threads may share one, and the model runs without the GIL.
#[pyclass(frozen, module = "dfm._dfm")]
struct Predictor {
    inner: dfm::predict::Predictor,
}

#[pymethods]
impl Predictor {
    /// Predictions for samples given as JSON text, `batch_size` per forward pass, as JSON text.
    fn predict_json(
        &self,
        py: Python<'_>,
        samples: Vec<String>,
        batch_size: usize,
    ) -> PyResult<Vec<String>> {
        let parsed = self.parse(&samples)?;
        // The model runs without the GIL: other Python threads go on meanwhile.
        py.detach(|| {
            let mut out = Vec::with_capacity(parsed.len());
            for chunk in parsed.chunks(batch_size.max(1)) {
                for p in self.inner.predict(chunk) {
                    out.push(serde_json::to_string(&p).map_err(error)?);
                }
            }
            Ok(out)
        })
    }

    /// Predictions for a JSON-lines file of samples, as `dfm predict --input` makes them.
    fn predict_file(&self, path: &str, batch_size: usize) -> PyResult<Vec<String>> {
        let (text, _) = dfm::predict::predict_jsonl(&self.inner, Path::new(path), batch_size)
            .map_err(error_chain)?;
        Ok(text.lines().map(String::from).collect())
    }

    /// The model's inputs for samples given as JSON text: (name, shape, little-endian f32
    /// bytes) per input, batch first (the Python side makes NumPy arrays of them).
    fn features_json<'py>(
        &self,
        py: Python<'py>,
        samples: Vec<String>,
    ) -> PyResult<Vec<Array<'py>>> {
        let features = self.features(&samples)?;
        let arrays = py.detach(|| self.inner.inputs(features)).into_iter();
        Ok(arrays
            .map(|a| array(py, a.name, a.shape, &a.data))
            .collect())
    }

    /// The model's outputs for samples given as JSON text (one forward pass), before they are
    /// decoded into predictions: (name, shape, bytes) per output, batch first.
    fn outputs_json<'py>(
        &self,
        py: Python<'py>,
        samples: Vec<String>,
    ) -> PyResult<Vec<Array<'py>>> {
        let features = self.features(&samples)?;
        let raw = py.detach(|| self.inner.forward(features));
        let arrays = dfm::predict::output_arrays(&raw).into_iter();
        Ok(arrays
            .map(|a| array(py, a.name, a.shape, &a.data))
            .collect())
    }

    /// What the model is (`GET /v1/model` of `dfm serve`), as JSON text.
    fn info_json(&self) -> String {
        dfm::serve::model_info_json(&self.inner).to_string()
    }
}

impl Predictor {
    /// The prepared model inputs of request samples given as JSON text (the codec's, as the
    /// server prepares them).
    fn features(&self, samples: &[String]) -> PyResult<Vec<dfm::features::Features>> {
        let codec = self.inner.codec();
        let parsed = self.parse(samples)?;
        Ok(parsed.into_iter().map(|s| codec.prepare(s).0).collect())
    }

    /// Request samples from JSON text, validated as the server validates them.
    fn parse(&self, samples: &[String]) -> PyResult<Vec<Sample>> {
        let limits = self.inner.limits();
        samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                dfm::predict::parse_sample(s.as_bytes(), &limits)
                    .map_err(|e| error(format!("sample {i}: {e}")))
            })
            .collect()
    }
}

fn array<'py>(py: Python<'py>, name: &str, shape: Vec<usize>, data: &[f32]) -> Array<'py> {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    (name.to_string(), shape, PyBytes::new(py, &bytes))
}

/// Loads an export bundle or a run folder on `device` (`flex`, `auto`, `wgpu`, `cuda[:N]`).
#[pyfunction]
#[pyo3(signature = (path, device = "flex"))]
fn load(path: &str, device: &str) -> PyResult<Predictor> {
    let selected = dfm::device::choose(Some(device), None).map_err(error_chain)?;
    let inner =
        dfm::predict::Predictor::load(Path::new(path), selected.device).map_err(error_chain)?;
    Ok(Predictor { inner })
}

/// The samples of a dataset's split in stored order, as JSON text (request form: images and
/// sensor series inline, labels kept).
#[pyclass(unsendable, module = "dfm._dfm")]
struct Samples {
    epoch: Epoch<Vec<Sample>>,
    batch: std::vec::IntoIter<Sample>,
}

#[pymethods]
impl Samples {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> PyResult<Option<String>> {
        loop {
            if let Some(s) = self.batch.next() {
                let v = dfm::predict::to_request_json(&s).map_err(error_chain)?;
                return Ok(Some(v.to_string()));
            }
            match self.epoch.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(error(e)),
                Some(Ok(b)) => self.batch = b.into_iter(),
            }
        }
    }
}

/// Reads a split (`train`, `val`, `test`, `test_days`, `all`) of the dataset folder `dir`.
#[pyfunction]
#[pyo3(signature = (dir, split = "test"))]
fn read_dataset_json(dir: &str, split: &str) -> PyResult<Samples> {
    let dir = Path::new(dir);
    let manifest = Manifest::load(dir).map_err(error)?;
    let opts = LoaderOptions {
        batch_size: 64,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(dir, &manifest, split, opts).map_err(error)?;
    Ok(Samples {
        epoch: loader.epoch(0, 0, Arc::new(|s| s), Arc::new(|b| b)),
        batch: Vec::new().into_iter(),
    })
}

/// The non-empty lines of a JSON-lines file, read as `dfm predict --input` reads it (a regular
/// file, bounded, UTF-8), each with its line number.
#[pyfunction]
fn read_lines(path: &str) -> PyResult<Vec<(usize, String)>> {
    let text = dfm::util::read_text_bounded(Path::new(path), dfm::util::limits::INPUT)
        .map_err(error_chain)?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    Ok(lines.map(|(i, l)| (i + 1, l.to_string())).collect())
}

/// The feature layout constants a graph of the model needs (channel indices, context groups),
/// as JSON text: taken from the feature code, not repeated in Python.
#[pyfunction]
fn layout_json() -> String {
    use dfm::features::{CTX_GROUPS, hist_ch, stop_ch};
    let groups: Vec<[usize; 2]> = CTX_GROUPS.iter().map(|(_, r)| [r.start, r.end]).collect();
    serde_json::json!({
        "hist_log_scale": hist_ch::LOG_SCALE,
        "stop_rule_rank": stop_ch::RULE_RANK,
        "ctx_groups": groups,
        "stop_fourier": dfm::model::stop_context::FOURIER,
    })
    .to_string()
}

#[pymodule]
fn _dfm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DfmError", m.py().get_type::<DfmError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Predictor>()?;
    m.add_class::<Samples>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(read_dataset_json, m)?)?;
    m.add_function(wrap_pyfunction!(layout_json, m)?)?;
    m.add_function(wrap_pyfunction!(read_lines, m)?)?;
    Ok(())
}
