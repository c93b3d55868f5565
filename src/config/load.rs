//! Reading a config: a TOML file (or the defaults), `--set section.key=value` overrides, the
//! tracking URI's credentials split off, then the checks.

use super::Config;
use anyhow::{Context, bail};
use std::path::Path;

/// With `data.sources` and no `data.path`, `data.path` names the first source.
fn default_path_to_first_source(table: &mut toml::Table) {
    let Some(data) = table.get_mut("data").and_then(|d| d.as_table_mut()) else {
        return;
    };
    if data.contains_key("path") {
        return;
    }
    let first = data
        .get("sources")
        .and_then(|s| s.as_array())
        .and_then(|a| a.first())
        .and_then(|f| f.get("path"))
        .cloned();
    if let Some(p) = first {
        data.insert("path".into(), p);
    }
}

/// Parses `a.b=value`: the value as a TOML value when it is one (`3e-4`, `true`, `[1, 2]`,
/// `"x"`), else as a plain string.
fn parse_override(s: &str) -> anyhow::Result<(Vec<String>, toml::Value)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("--set `{s}`: expected section.key=value"))?;
    let path: Vec<String> = k.trim().split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        bail!("--set `{s}`: bad key `{k}`");
    }
    let v = v.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(v.to_string()),
    };
    Ok((path, value))
}

fn apply(root: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let mut t = root;
    for (i, k) in path[..path.len() - 1].iter().enumerate() {
        let e = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        t = e.as_table_mut().with_context(|| {
            format!(
                "--set {}: `{}` is not a section",
                path.join("."),
                path[..=i].join(".")
            )
        })?;
    }
    t.insert(path[path.len() - 1].clone(), value);
    Ok(())
}

impl Config {
    /// Loads a config file (or the defaults when `path` is None), applies `--set` overrides and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> anyhow::Result<Config> {
        let (table, origin) = match path {
            Some(p) => {
                let text = crate::util::read_text_bounded(p, crate::util::limits::SMALL)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                let t: toml::Table =
                    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                (t, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        Self::from_table(table, &origin, overrides)
    }

    /// Parses a config's text (`origin` names it in errors), validated.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let t: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Self::from_table(t, origin, &[])
    }

    fn from_table(
        mut table: toml::Table,
        origin: &str,
        overrides: &[String],
    ) -> anyhow::Result<Config> {
        for o in overrides {
            let (k, v) = parse_override(o)?;
            apply(&mut table, &k, v)?;
        }
        default_path_to_first_source(&mut table);
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                anyhow::anyhow!("{origin}: key `{key}`: {}", e.into_inner())
            })?;
        let (uri, creds) = super::tracking_uri::Credentials::split(&cfg.run.track);
        cfg.run.track = uri;
        cfg.run.track_credentials = creds;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }
}
