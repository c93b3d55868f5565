//! The main job (`dfm quickstart`): simulate a delivery world when the config's dataset is not
//! there yet, train the model (or continue an unfinished run), evaluate it on held-out routes,
//! and export the best model as a bundle.

use crate::config::Config;
use burn::tensor::Device;

/// Runs the quickstart for a config on a device, printing what it does.
pub fn run(cfg: Config, device: &Device) -> anyhow::Result<()> {
    let run = cfg.run_dir();
    anyhow::ensure!(
        !crate::store::is_remote(&run),
        "the quickstart keeps its run on this machine (run.dir {}): train into a bucket with `dfm train`",
        crate::store::scrub(&run.display().to_string())
    );
    let resume = !crate::checkpoint::list(&run)?.is_empty();
    if resume {
        println!(
            "{} holds a run already: continuing it (delete the folder to start over)",
            run.display()
        );
    }
    let t = std::time::Instant::now();
    let tracking = crate::track::TrackingServer::resolve(None, &cfg)?;
    let out = crate::train::train(cfg, resume, device, false)?;
    if out.samples_per_s > 0.0 {
        println!(
            "trained {} steps in {:.1} min ({:.0} samples/s)",
            out.steps,
            t.elapsed().as_secs_f64() / 60.0,
            out.samples_per_s
        );
    } else {
        println!("the run was already complete ({} steps)", out.steps);
    }
    if let Some(r) = &out.report {
        print!("{}", r.render());
    }
    let bundle = out.run_dir.join("export");
    let m = crate::bundle::export(&out.run_dir, crate::bundle::Which::Best, &bundle)?;
    println!(
        "exported the best model (step {}) to {}",
        m.step,
        bundle.display()
    );
    if let Some(target) = &tracking {
        println!(
            "{}",
            crate::track::log_bundle(target, &out.run_dir, &bundle)?.render()
        );
    }
    println!(
        "run folder: {} (config.toml, metrics.jsonl, loss.png, eval_test.json, checkpoints)",
        out.run_dir.display()
    );
    Ok(())
}
