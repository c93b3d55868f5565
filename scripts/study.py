"""What the study scripts (real_data.py, transfer.py, pretraining.py, video.py) share: running the
release binary with its output in a log, and mean ± sample standard deviation over seeds."""
import os, statistics, subprocess, sys

DFM = os.path.join("target", "release", "dfm")


def run(args, log):
    """Runs `dfm ARGS` with its output in `log`; stops the script, naming the log, if it fails."""
    if os.path.dirname(log):
        os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        r = subprocess.run([DFM] + args, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"dfm {' '.join(args)} failed; see {log}")


def ms(xs):
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def cell(xs, p=2):
    """`mean ± spread` with `p` decimals."""
    m, s = ms(xs)
    return f"{m:.{p}f} ± {s:.{p}f}"
