//! The fused AdamW's state on disk, in burn's optimizer record format: per parameter id the
//! tensors `{id}.momentum.moment_1` and `{id}.momentum.moment_2` (the parameter's shape), the
//! scalars `{id}.momentum.time` and `{id}.__rank`. burn's `ModuleOptimizer` with AdamW reads
//! and writes the same file, so either optimizer resumes the other's checkpoint.

use anyhow::{Context, bail};
use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_pack::{Reader, Scalar, Writer};
use std::collections::HashMap;
use std::path::Path;

/// One parameter's AdamW state, flattened.
#[derive(Clone)]
pub(super) struct Moments {
    pub m: Tensor<1>,
    pub v: Tensor<1>,
    /// Steps taken (0: none yet).
    pub time: usize,
    /// The parameter's shape.
    pub shape: Vec<usize>,
}

impl Moments {
    pub fn zeros(shape: &[usize], device: &Device) -> Self {
        let n = shape.iter().product::<usize>();
        Self {
            m: Tensor::zeros([n], device),
            v: Tensor::zeros([n], device),
            time: 0,
            shape: shape.to_vec(),
        }
    }
}

const M1: &str = "momentum.moment_1";
const M2: &str = "momentum.moment_2";
const TIME: &str = "momentum.time";
const RANK: &str = "__rank";

/// Writes `entries` (parameters that never took a step are left out, as burn does).
pub(super) fn write_record(path: &Path, entries: Vec<(ParamId, Moments)>) -> anyhow::Result<()> {
    let mut tensors = Vec::new();
    let mut scalars = Vec::new();
    for (id, s) in entries.into_iter().filter(|(_, s)| s.time > 0) {
        let id = id.val();
        for (leaf, t) in [(M1, s.m), (M2, s.v)] {
            let data = t.into_data().convert_dtype(DType::F32);
            let (bytes, _, dtype) = data.into_parts();
            let name = format!("{id}.{leaf}");
            tensors.push(burn_pack::Tensor::new(
                name,
                dtype,
                s.shape.clone(),
                Some(id),
                bytes,
            ));
        }
        scalars.push((format!("{id}.{TIME}"), Scalar::from(s.time)));
        scalars.push((format!("{id}.{RANK}"), Scalar::from(s.shape.len())));
    }
    let mut w = Writer::new(tensors);
    for (k, v) in &scalars {
        w = w.with_scalar(k, *v);
    }
    w.write_to_file(path)
        .map_err(|e| anyhow::anyhow!("saving optimizer {}: {e}", path.display()))
}

/// One moment of one parameter as read: the parameter's shape and the values, flattened.
type Half = (Vec<usize>, Tensor<1>);

/// Reads a record written by [`write_record`] or by burn's AdamW, on `device`.
pub(super) fn read_record(
    path: &Path,
    device: &Device,
) -> anyhow::Result<HashMap<ParamId, Moments>> {
    let at = || path.display().to_string();
    let reader = Reader::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
    let scalars = reader.scalars().clone();
    let mut halves: HashMap<u64, [Option<Half>; 2]> = HashMap::new();
    for t in reader
        .into_tensors()
        .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?
    {
        let (name, dtype, shape, id, bytes) = t
            .into_parts()
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        let slot = match name.split_once('.').map(|(_, leaf)| leaf) {
            Some(M1) => 0,
            Some(M2) => 1,
            _ => bail!("{}: tensor {name} is not AdamW's state", at()),
        };
        let id = id.with_context(|| format!("{}: tensor {name} has no parameter id", at()))?;
        let dims = shape.to_vec();
        let n = dims.iter().product::<usize>();
        let data = TensorData::from_bytes(bytes, [n], dtype).convert_dtype(DType::F32);
        halves.entry(id).or_default()[slot] = Some((dims, Tensor::from_data(data, device)));
    }
    let mut out = HashMap::with_capacity(halves.len());
    for (id, [m, v]) in halves {
        let (Some((shape, m)), Some((_, v))) = (m, v) else {
            bail!("{}: parameter {id} lacks one of AdamW's two moments", at());
        };
        let time = scalars
            .get(&format!("{id}.{TIME}"))
            .and_then(|s| usize::try_from(*s).ok())
            .with_context(|| format!("{}: parameter {id} has no step count ({TIME})", at()))?;
        out.insert(ParamId::from(id), Moments { m, v, time, shape });
    }
    Ok(out)
}
