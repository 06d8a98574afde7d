"""The tutorials (docs/tutorials/*.py, jupytext percent scripts with their own
assertions) run to completion, and a short run of examples/maml_sinusoid.py
writes its figure and shows meta-training helping.

Each runs in a subprocess, as a user would run it. matplotlib and tqdm (the
``examples`` extra) are required: without them these tests fail, they do not skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "docs" / "tutorials"
MAML = ROOT / "examples" / "maml_sinusoid.py"
TUTORIAL_NAMES = ["meta_optimizer.py", "stop_gradient.py"]


def run_script(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    # One intra-op thread: the tensors are tiny, and on a machine whose cores are
    # busy with something else torch's thread pool slows small ops down badly.
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr[-5000:]}"
    )
    return proc


def test_example_dependencies_are_installed():
    """matplotlib and tqdm are needed by the examples (pip install matplotlib tqdm,
    or the package's `examples` extra)."""
    missing = []
    for name in ("matplotlib", "tqdm"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    assert not missing, f"not installed: {', '.join(missing)} (pip install matplotlib tqdm)"


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("*.py")) == sorted(TUTORIAL_NAMES)


@pytest.mark.parametrize("name", TUTORIAL_NAMES)
def test_tutorial_runs(name, tmp_path):
    path = TUTORIALS / name
    source = path.read_text()
    assert "# %%" in source and "# %% [markdown]" in source  # jupytext percent format
    proc = run_script([str(path)], cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr


MSE_LINE = re.compile(r"post-adaptation test MSE: meta-trained ([0-9.]+), baseline ([0-9.]+)")


@pytest.mark.parametrize(
    "flags",
    [["--no-use-accelerated-op"], ["--inner-optimizer", "adam"], ["--vmap"]],
    ids=["sgd-plain", "adam-fused", "sgd-fused-vmap"],
)
def test_maml_sinusoid_short_run(flags, tmp_path):
    output = tmp_path / "maml.png"
    # 100 outer steps: enough for a clear margin (about 2.7 against 4.0) in a few seconds.
    args = [str(MAML), "--outer-steps", "100", "--eval-tasks", "50", "--output", str(output), *flags]
    proc = run_script(args, cwd=tmp_path, timeout=180)
    assert output.is_file() and output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 20_000  # a real figure, not an empty canvas
    match = MSE_LINE.search(proc.stdout)
    assert match, proc.stdout
    meta_trained, baseline = float(match.group(1)), float(match.group(2))
    assert meta_trained < baseline, proc.stdout
    assert "meta-training" in proc.stderr  # the tqdm progress bar


def load_maml():
    import importlib.util

    spec = importlib.util.spec_from_file_location("maml_sinusoid", MAML)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_maml_vmap_meta_gradient_equals_the_per_task_loop(inner, fused):
    """--vmap (torch.func: vmap over the tasks of grad through the inner loop)
    and the default loop (a MetaOptimizer per task) give the same meta-batch
    loss and meta-gradient, in float64."""
    import torch

    maml = load_maml()
    flags = ["--inner-optimizer", inner, "--inner-lr", "0.05"] + ([] if fused else ["--no-use-accelerated-op"])
    args = maml.parse_args(flags)
    tasks = maml.sample_tasks(4, 10, 10, torch.Generator().manual_seed(3))
    tasks = maml.Tasks(*(t.double() for t in tasks))
    results = []
    for vmap in (False, True):
        net = maml.make_net(0).double()
        if vmap:
            loss = maml.meta_batch_vmap(net, maml.make_inner_transformation(args), tasks, args)
        else:
            loss = maml.meta_batch_loop(net, maml.make_inner_optimizer(net, args), tasks, args)
        results.append((loss, [p.grad.clone() for p in net.parameters()]))
    (loop_loss, loop_grads), (vmap_loss, vmap_grads) = results
    # The same float64 arithmetic up to the order of sums (the tasks' losses
    # and gradients, batched matrix products): differences of a few ulps,
    # through 5 inner steps.
    assert abs(vmap_loss - loop_loss) <= 1e-12 * abs(loop_loss)
    for a, b in zip(vmap_grads, loop_grads):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    assert all(g.abs().max() > 0 for g in loop_grads)
