//! `dfm eval --ablation`: the full model against the model with each single modality masked out,
//! so a researcher sees what each input contributes.

use super::report::EvalReport;
use std::fmt::Write as _;

pub fn render(full: &EvalReport, drops: &[EvalReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ablation on `{}` ({} samples): each row masks one modality out",
        full.split, full.samples
    );
    let _ = writeln!(
        s,
        "  {:<16}{:>10}{:>10}{:>10}{:>10}{:>9}{:>9}{:>8}",
        "without", "minADE_K", "minFDE_K", "minADE_1", "ETA MAE", "on-time", "deliv.", "HR@3"
    );
    let row = |s: &mut String, name: &str, r: &EvalReport| {
        let t = r.trajectory.as_ref();
        let g = |x: Option<f64>, w: usize, p: usize| {
            x.map(|v| format!("{v:>w$.p$}"))
                .unwrap_or_else(|| format!("{:>w$}", "absent"))
        };
        let _ = writeln!(
            s,
            "  {:<16}{}{}{}{}{}{}{}",
            name,
            g(t.and_then(|t| t.at_k.as_ref()).map(|m| m.min_ade_m), 10, 2),
            g(t.and_then(|t| t.at_k.as_ref()).map(|m| m.min_fde_m), 10, 2),
            g(t.and_then(|t| t.at_1.as_ref()).map(|m| m.min_ade_m), 10, 2),
            g(r.eta.as_ref().map(|m| m.mae_s), 10, 1),
            g(r.on_time.as_ref().and_then(|m| m.auroc), 9, 3),
            g(r.delivered.as_ref().and_then(|m| m.auroc), 9, 3),
            g(r.next_stop.as_ref().map(|m| m.hr_at_3), 8, 3)
        );
    };
    row(&mut s, "(nothing)", full);
    for r in drops {
        row(&mut s, &r.model.dropped.join("+"), r);
    }
    s
}
