//! Export bundles: a self-contained folder a downstream system (or another stack) can load.
//!
//! ```text
//! bundle/
//!   model.bpk           weights, burnpack (burn)
//!   model.safetensors   the same weights; tensor names are the module paths
//!                       (e.g. `enc.fusion.layers.0.mha.query.weight`; Linear weights are
//!                       [in, out], as burn stores them)
//!   config.toml         the run's resolved config (model shape, image size...)
//!   normalization.json  the dataset spec and feature statistics the model was trained with
//!   bundle.json         format, schema version, training-data manifest hash, source run and
//!                       step, and the SHA-256 of every other file
//! ```
//! Loading checks every hash and the schema version and refuses a tampered or mismatched bundle.

use crate::checkpoint;
use crate::config::Config;

use crate::data::sample::SCHEMA_VERSION;
use crate::data::shards::sha256_file;
use crate::features::Featurizer;
use crate::model::DfmModel;
use crate::normalization::{NORMALIZATION, NormalizationFile};
use anyhow::{Context, bail};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "dfm-bundle";
use crate::eval::ridge::FILE as RIDGE;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    pub format: String,
    pub schema_version: u32,
    pub dfm_version: String,
    pub source_run: String,
    pub step: usize,
    pub val_loss: Option<f64>,
    pub manifest_sha256: String,
    /// SHA-256 of each file of the bundle (all but bundle.json).
    pub files: BTreeMap<String, String>,
}

/// Which checkpoint of a run to export.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    Best,
    Last,
    Step(usize),
}

pub fn checkpoint_dir(run: &Path, which: Which) -> anyhow::Result<PathBuf> {
    match which {
        Which::Best => checkpoint::best_or_last(run),
        Which::Last => checkpoint::list(run)?
            .pop()
            .map(|x| x.1)
            .with_context(|| format!("{}: no checkpoint", run.display())),
        Which::Step(n) => {
            let all = checkpoint::list(run)?;
            all.iter()
                .find(|(s, _)| *s == n)
                .map(|x| x.1.clone())
                .with_context(|| {
                    let have: Vec<String> = all.iter().map(|(s, _)| s.to_string()).collect();
                    format!(
                        "{}: no checkpoint at step {n} (steps kept: {})",
                        run.display(),
                        have.join(", ")
                    )
                })
        }
    }
}

/// Writes a bundle of a run's checkpoint into `out` (atomically, replacing an older bundle).
pub fn export(run: &Path, which: Which, out: &Path) -> anyhow::Result<BundleMeta> {
    let cfg = Config::load(Some(&run.join("config.toml")), &[])
        .with_context(|| format!("{} is not a run folder", run.display()))?;
    super::load::check_no_retrieval(&cfg, run)?;
    let normalization = NormalizationFile::load(&run.join(NORMALIZATION))?;
    let dir = checkpoint_dir(run, which)?;
    let state = checkpoint::read_state(&dir)?;
    let device = Device::flex();
    let model = DfmModel::new(
        &cfg.model,
        &normalization.spec,
        cfg.data.image_size,
        &device,
    );
    let model = checkpoint::load_model(model, &dir)?;
    let mut meta = BundleMeta {
        format: FORMAT.into(),
        schema_version: normalization.schema_version,
        dfm_version: env!("CARGO_PKG_VERSION").into(),
        source_run: run.display().to_string(),
        step: state.step,
        val_loss: state.val_loss,
        manifest_sha256: normalization.manifest_sha256.clone(),
        files: BTreeMap::new(),
    };
    check_replaceable(out)?;
    let swap = crate::util::Swap::hidden(out);
    swap.begin()?;
    let mut fill = |tmp: &Path| -> anyhow::Result<()> {
        std::fs::copy(dir.join("model.bpk"), tmp.join("model.bpk"))?;
        let mut store = SafetensorsStore::from_file(tmp.join("model.safetensors"))
            .metadata("format", "dfm-model")
            .metadata("schema_version", SCHEMA_VERSION.to_string());
        model
            .save_into(&mut store)
            .map_err(|e| anyhow::anyhow!("writing safetensors: {e:?}"))?;
        std::fs::write(tmp.join("config.toml"), cfg.to_toml()?)?;
        std::fs::write(
            tmp.join(NORMALIZATION),
            serde_json::to_vec_pretty(&normalization)?,
        )?;
        let mut files = vec![
            "model.bpk",
            "model.safetensors",
            "config.toml",
            NORMALIZATION,
        ];
        // The learned linear baseline travels with the model it is compared with.
        if run.join(RIDGE).is_file() {
            std::fs::copy(run.join(RIDGE), tmp.join(RIDGE))?;
            files.push(RIDGE);
        }
        for f in files {
            meta.files.insert(f.to_string(), sha256_file(&tmp.join(f))?);
        }
        std::fs::write(tmp.join("bundle.json"), serde_json::to_vec_pretty(&meta)?)?;
        Ok(())
    };
    if let Err(e) = fill(&swap.tmp) {
        let _ = std::fs::remove_dir_all(&swap.tmp);
        return Err(e);
    }
    swap.finish(|_| {})?;
    Ok(meta)
}

/// `--out` may be replaced as a whole: it is missing, an empty folder, or a bundle holding its
/// own files only. Anything else is refused: an export never deletes a file it did not write.
fn check_replaceable(out: &Path) -> anyhow::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    anyhow::ensure!(
        out.is_dir(),
        "--out {} exists and is not a folder",
        out.display()
    );
    let own: Vec<String> = match read_regular(&out.join("bundle.json"), MAX_META_BYTES) {
        Ok(bytes) => serde_json::from_slice::<BundleMeta>(&bytes)
            .map(|m| m.files.into_keys().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut others = Vec::new();
    for e in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let name = e?.file_name().to_string_lossy().to_string();
        if name != "bundle.json" && !own.contains(&name) {
            others.push(name);
        }
    }
    others.sort();
    anyhow::ensure!(
        others.is_empty(),
        "--out {} holds files that are not a bundle's ({}): an export replaces the folder as a whole; choose an empty or new folder",
        out.display(),
        others.join(", ")
    );
    Ok(())
}

/// A loaded, verified model ready for inference.
pub struct Bundle {
    pub dir: PathBuf,
    pub meta: BundleMeta,
    pub cfg: Config,
    pub normalization: NormalizationFile,
    pub featurizer: Featurizer,
    pub model: DfmModel,
    pub ridge: Option<crate::eval::ridge::Ridge>,
}

/// Largest `bundle.json`, bytes.
const MAX_META_BYTES: u64 = 1 << 20;
/// Largest file a bundle may list, bytes.
const MAX_FILE_BYTES: u64 = 16 << 30;

/// Reads a bundle file once: it must be a regular file (not a link or a device) of at most
/// `max` bytes.
fn read_regular(p: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let md = std::fs::symlink_metadata(p)
        .with_context(|| format!("{}: missing or unreadable", p.display()))?;
    if !md.file_type().is_file() {
        bail!(
            "{}: not a regular file (links and devices are refused)",
            p.display()
        );
    }
    if md.len() > max {
        bail!(
            "{}: {} bytes, more than the {max} a bundle file may have",
            p.display(),
            md.len()
        );
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(p)?, max + 1),
        &mut bytes,
    )?;
    Ok(bytes)
}

/// Reads every file `bundle.json` lists, checking names and SHA-256 on the bytes that will be
/// used (no window between the check and the use); keeps the bytes of the files in `keep`, and
/// drops the others once verified.
fn read_verified(
    dir: &Path,
    meta: &BundleMeta,
    keep: &[&str],
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let meta_path = dir.join("bundle.json");
    let mut out = BTreeMap::new();
    for (f, want) in &meta.files {
        if !crate::util::plain_file_name(f) {
            bail!(
                "{}: lists `{f}`, not a plain file name inside the bundle",
                meta_path.display()
            );
        }
        let p = dir.join(f);
        let bytes = read_regular(&p, MAX_FILE_BYTES)?;
        let got = crate::data::shards::hex(&sha2::Sha256::digest(&bytes));
        if &got != want {
            bail!(
                "{}: SHA-256 {got} differs from bundle.json's {want}: the file was modified or corrupted",
                p.display()
            );
        }
        if keep.contains(&f.as_str()) {
            out.insert(f.clone(), bytes);
        }
    }
    Ok(out)
}

/// Loads a bundle, verifying every file's SHA-256 and the schema version.
pub fn read_bundle(dir: &Path, device: &Device) -> anyhow::Result<Bundle> {
    let meta = read_meta(dir)?;
    let mut files = read_verified(
        dir,
        &meta,
        &["config.toml", NORMALIZATION, RIDGE, "model.bpk"],
    )?;
    let name = |f: &str| dir.join(f).display().to_string();
    let text = String::from_utf8(files.remove("config.toml").unwrap_or_default())
        .with_context(|| format!("{}: not UTF-8", name("config.toml")))?;
    let cfg = Config::parse(&text, &name("config.toml"))?;
    let normalization: NormalizationFile =
        serde_json::from_slice(&files.remove(NORMALIZATION).unwrap_or_default())
            .with_context(|| format!("{} is not valid", name(NORMALIZATION)))?;
    super::check_features(&normalization, dir)?;
    let ridge = match files.remove(RIDGE) {
        Some(b) => Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("{}: not a ridge baseline", name(RIDGE)))?,
        ),
        None => None,
    };
    let model = DfmModel::new(&cfg.model, &normalization.spec, cfg.data.image_size, device);
    let model = checkpoint::load_model_bytes(
        model,
        files.remove("model.bpk").unwrap_or_default(),
        &name("model.bpk"),
    )?;
    let featurizer = Featurizer::new(
        &normalization.spec,
        &normalization.norm,
        cfg.data.image_size,
    );
    Ok(Bundle {
        dir: dir.to_path_buf(),
        meta,
        cfg,
        normalization,
        featurizer,
        model,
        ridge,
    })
}

/// A bundle's `bundle.json`: its format, a schema version this dfm reads, and a hash for each
/// file a model needs.
fn read_meta(dir: &Path) -> anyhow::Result<BundleMeta> {
    let meta_path = dir.join("bundle.json");
    let bytes = read_regular(&meta_path, MAX_META_BYTES)
        .with_context(|| format!("{}: not an export bundle (no bundle.json)", dir.display()))?;
    let meta: BundleMeta = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid", meta_path.display()))?;
    if meta.format != FORMAT {
        bail!(
            "{}: format `{}` is not `{FORMAT}`",
            meta_path.display(),
            meta.format
        );
    }
    if meta.schema_version != SCHEMA_VERSION {
        bail!(
            "{}: the model was trained on schema version {}, this dfm reads version {SCHEMA_VERSION}",
            meta_path.display(),
            meta.schema_version
        );
    }
    for f in ["model.bpk", "config.toml", NORMALIZATION] {
        if !meta.files.contains_key(f) {
            bail!("{}: lists no hash for {f}", meta_path.display());
        }
    }
    Ok(meta)
}
