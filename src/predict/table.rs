//! Predictions as an Arrow table, written as Parquet: one row per sample, columns that pandas,
//! DuckDB and Spark read directly.
//!
//! | column | type | what |
//! |---|---|---|
//! | `key`, `t0` | string, double | the sample |
//! | `horizons_s` | list<double> | seconds after `t0` of each trajectory point |
//! | `most_likely_lat`, `most_likely_lon` | list<double> | the most likely trajectory |
//! | `mode_probability` | list<double> | modes, most probable first |
//! | `mode_lat`, `mode_lon` | list<list<double>> | each mode's trajectory, same order |
//! | `stop_id` | list<string> | listed stops the model read, in the request's order |
//! | `eta_p10_s`, `eta_p50_s`, `eta_p90_s` | list<double> | per stop |
//! | `on_time_probability`, `next_probability` | list<double> | per stop |
//! | `next_stop_ranking` | list<string> | stop ids, most likely next first |
//! | `delivered_probability` | double | |
//! | `stops_not_scored` | list<string> | stops beyond the model's capacity |

use crate::predict::Prediction;
use anyhow::Context;
use arrow_array::builder::{ArrayBuilder, Float64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Doubles = ListBuilder<Float64Builder>;
type Strings = ListBuilder<StringBuilder>;

/// Column builders for a batch of predictions.
#[derive(Default)]
pub struct Rows {
    key: StringBuilder,
    t0: Float64Builder,
    horizons_s: Doubles,
    most_likely_lat: Doubles,
    most_likely_lon: Doubles,
    mode_probability: Doubles,
    mode_lat: ListBuilder<Doubles>,
    mode_lon: ListBuilder<Doubles>,
    stop_id: Strings,
    eta_p10_s: Doubles,
    eta_p50_s: Doubles,
    eta_p90_s: Doubles,
    on_time_probability: Doubles,
    next_probability: Doubles,
    next_stop_ranking: Strings,
    delivered_probability: Float64Builder,
    stops_not_scored: Strings,
}

fn doubles(b: &mut Doubles, v: impl IntoIterator<Item = f64>) {
    for x in v {
        b.values().append_value(x);
    }
    b.append(true);
}

fn strings<'a>(b: &mut Strings, v: impl IntoIterator<Item = &'a String>) {
    for s in v {
        b.values().append_value(s);
    }
    b.append(true);
}

/// One trajectory coordinate (0: latitude, 1: longitude) per point.
fn coord(points: &[[f64; 2]], c: usize) -> impl Iterator<Item = f64> + '_ {
    points.iter().map(move |p| p[c])
}

impl Rows {
    pub fn len(&self) -> usize {
        self.key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, p: &Prediction) {
        self.key.append_value(&p.key);
        self.t0.append_value(p.t0);
        doubles(&mut self.horizons_s, p.horizons_s.iter().copied());
        doubles(&mut self.most_likely_lat, coord(&p.most_likely.lat_lon, 0));
        doubles(&mut self.most_likely_lon, coord(&p.most_likely.lat_lon, 1));
        doubles(
            &mut self.mode_probability,
            p.modes.iter().map(|m| m.probability),
        );
        for m in &p.modes {
            doubles(self.mode_lat.values(), coord(&m.lat_lon, 0));
            doubles(self.mode_lon.values(), coord(&m.lat_lon, 1));
        }
        self.mode_lat.append(true);
        self.mode_lon.append(true);
        strings(&mut self.stop_id, p.stops.iter().map(|s| &s.stop_id));
        doubles(&mut self.eta_p10_s, p.stops.iter().map(|s| s.eta_p10_s));
        doubles(&mut self.eta_p50_s, p.stops.iter().map(|s| s.eta_p50_s));
        doubles(&mut self.eta_p90_s, p.stops.iter().map(|s| s.eta_p90_s));
        doubles(
            &mut self.on_time_probability,
            p.stops.iter().map(|s| s.on_time_probability),
        );
        doubles(
            &mut self.next_probability,
            p.stops.iter().map(|s| s.next_probability),
        );
        strings(&mut self.next_stop_ranking, &p.next_stop_ranking);
        self.delivered_probability
            .append_value(p.delivered_probability);
        strings(&mut self.stops_not_scored, &p.stops_not_scored);
    }

    /// The rows so far as a record batch (the builders start over).
    pub fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("key", Arc::new(self.key.finish())),
            ("t0", Arc::new(self.t0.finish())),
            ("horizons_s", Arc::new(self.horizons_s.finish())),
            ("most_likely_lat", Arc::new(self.most_likely_lat.finish())),
            ("most_likely_lon", Arc::new(self.most_likely_lon.finish())),
            ("mode_probability", Arc::new(self.mode_probability.finish())),
            ("mode_lat", Arc::new(self.mode_lat.finish())),
            ("mode_lon", Arc::new(self.mode_lon.finish())),
            ("stop_id", Arc::new(self.stop_id.finish())),
            ("eta_p10_s", Arc::new(self.eta_p10_s.finish())),
            ("eta_p50_s", Arc::new(self.eta_p50_s.finish())),
            ("eta_p90_s", Arc::new(self.eta_p90_s.finish())),
            (
                "on_time_probability",
                Arc::new(self.on_time_probability.finish()),
            ),
            ("next_probability", Arc::new(self.next_probability.finish())),
            (
                "next_stop_ranking",
                Arc::new(self.next_stop_ranking.finish()),
            ),
            (
                "delivered_probability",
                Arc::new(self.delivered_probability.finish()),
            ),
            ("stops_not_scored", Arc::new(self.stops_not_scored.finish())),
        ];
        Ok(RecordBatch::try_from_iter(cols)?)
    }
}

/// A Parquet file written batch by batch into a temporary name, renamed into place when
/// finished: an interrupted job leaves no partial file under the final name.
pub struct ParquetOut {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<std::fs::File>>,
    rows: usize,
}

impl ParquetOut {
    pub fn create(path: &Path) -> Self {
        let tmp = path.with_extension("parquet.partial");
        ParquetOut {
            path: path.to_path_buf(),
            tmp,
            writer: None,
            rows: 0,
        }
    }

    /// Writes a batch as one row group (the file is opened with the first batch's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let file = std::fs::File::create(&self.tmp)
                .with_context(|| format!("cannot create {}", self.tmp.display()))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            self.writer = Some(ArrowWriter::try_new(file, batch.schema(), Some(props))?);
        }
        let w = self.writer.as_mut().expect("opened above");
        w.write(batch)
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Closes the file and moves it into place; returns the rows written. A file with no batch
    /// written gets an empty table (`empty`: the schema's source).
    pub fn finish(mut self, empty: &mut Rows) -> anyhow::Result<usize> {
        if self.writer.is_none() {
            self.write(&empty.finish()?)?;
        }
        let w = self.writer.take().expect("opened above");
        w.close()
            .with_context(|| format!("closing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot move {} into place", self.path.display()))?;
        Ok(self.rows)
    }
}

impl Drop for ParquetOut {
    /// A job that stops before `finish` leaves no partial file.
    fn drop(&mut self) {
        if self.writer.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
