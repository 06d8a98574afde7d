"""docs/benchmarks.md and its plot from the results of bench/run.py (one dict
per allocator, as workloads return them)."""

from __future__ import annotations

from pathlib import Path

from common import FLOAT32, JEMALLOC_CONF
from workloads import NO_LR_GRAD, NONDIFF_FLOATS, OPTIMIZERS, UNROLL_FLOATS_PER_STEP, step_floats

PAGE = 4096  # bytes mapped per minor page fault


def num(x, digits: int = 2) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def largest(rows, optimizer):
    return max((r for r in rows if r["optimizer"] == optimizer), key=lambda r: r["log2"])


def by_variant(rows, key="variant"):
    return {r[key]: r for r in rows}


def each_row(ran: dict, key: str):
    """(allocator, row) for every row of workload ``key``."""
    return [(alloc, row) for alloc, r in ran.items() for row in r[key]]


def against_plain(ran: dict, key: str, value: str):
    """(allocator, row, the plain variant's value) for every row of workload ``key``."""
    for alloc, r in ran.items():
        plain = by_variant(r[key])["plain"][value]
        for row in r[key]:
            yield alloc, row, plain


def fresh(faults, elements: int) -> str:
    """Page faults per call as full-size tensors written into fresh memory."""
    return "—" if faults is None else f"{faults * PAGE / (elements * FLOAT32):.1f}"


def targets(results: dict) -> list[list]:
    """The issue's targets: the value measured, its same-run reference, and
    the measurements that explain it."""
    rows = []

    def add(name, alloc, value, values, goal, met, cause):
        status = "not measured" if value is None else "met" if met else "**missed**"
        rows.append([name, alloc, num(value), values, goal, status, cause])

    for alloc, r in results.items():
        a = largest(r["steps"], "adam")
        n = 1 << a["log2"]
        probes = [r[key]["region_ms"] for key in ("bandwidth", "bandwidth_end")]
        contention = "contention probe " + ", ".join(f"{num(p[0], 3)} → {num(p[1], 3)} ms" for p in probes)
        if alloc == "jemalloc":
            v = ratio(a["floor_ms"], a["fused"])
            add(f"2. Adam step 2^{a['log2']}: floor / fused", alloc, v,
                f"floor {num(a['floor_ms'])} ms, fused {num(a['fused'])} ms", "≥ 0.6", v >= 0.6,
                f"fused with a constant lr {num(a[NO_LR_GRAD])} ms; page faults per step: fused {num(a['fused_faults'], 0)}; "
                f"copy {num(r['bandwidth']['bandwidth'] / 1e9, 1)} / {num(r['bandwidth_end']['bandwidth'] / 1e9, 1)} "
                f"GB/s; {contention}")  # fmt: skip
        else:
            v = ratio(a["plain"], a["fused"])
            add(f"2. Adam step 2^{a['log2']}: plain / fused", alloc, v,
                f"plain {num(a['plain'])} ms, fused {num(a['fused'])} ms", "≥ 5", v >= 5,
                f"page faults per step: fused {num(a['fused_faults'], 0)} (its outputs on 2 MiB pages), plain "
                f"{num(a['plain_faults'], 0)} ({fresh(a['plain_faults'], n)} fresh tensors on 4 KiB pages)")  # fmt: skip
        m = by_variant(r["model"])
        v = ratio(m["plain"]["ms"], m["fused"]["ms"])
        add("4. model, 5 MetaAdam steps: plain / fused", alloc, v,
            f"plain {num(m['plain']['ms'])} ms, fused {num(m['fused']['ms'])} ms", "≥ 2", v >= 2,
            f"torch.func {num(m['torch.func']['ms'])} ms; {contention}")  # fmt: skip
        p = by_variant(r["peak"])
        v = ratio(p["fused"]["unroll"], p["plain"]["unroll"])
        size = (1 << r["config"]["peak"][0]) * FLOAT32
        add("5. peak memory, 20-step unroll: fused / plain", alloc, v,
            f"plain {p['plain']['unroll'] / 2**20:.0f} MiB, fused {p['fused']['unroll'] / 2**20:.0f} MiB",
            "≤ 0.6", v <= 0.6,
            f"full-size tensors: fused {p['fused']['unroll'] / size:.0f}, plain {p['plain']['unroll'] / size:.0f}")  # fmt: skip
        for row in r["nondiff"]:
            v = ratio(row["unrollopt"], row["torch fused"])
            add(f"6. Adam.step(), {row['tensors']} tensor(s): unrollopt / torch fused", alloc, v,
                f"torch fused {num(row['torch fused'])} ms, unrollopt {num(row['unrollopt'])} ms", "≤ 1.1",
                v <= 1.1, f"its operator alone {num(row['unrollopt op'], 3)} ms; floor {num(row['floor_ms'], 3)} ms; "
                f"{contention}")  # fmt: skip
        u = r["unroll"]
        v = ratio(u["torch.compile"], u["fused"])
        n = 1 << u["log2"]
        add(f"anchor: 5-step unrolled Adam 2^{u['log2']}: torch.compile / fused", alloc, v,
            f"torch.compile {num(u['torch.compile'])} ms, fused {num(u['fused'])} ms", "> 1",
            v is not None and v > 1,
            f"fused with a constant lr {num(u[NO_LR_GRAD])} ms; page faults per call: fused {num(u.get('fused_faults'), 0)}, "
            f"torch.compile {num(u.get('torch.compile_faults'), 0)} ({fresh(u.get('torch.compile_faults'), n)} tensors); "
            "see the anchor's section")  # fmt: skip
    return rows


CAUSES = """
How to read the causes (each is measured in the tables below):

- *Page faults* (minor faults per call, `getrusage`). With glibc's allocator a block above the mmap
  threshold (which adapts up to 32 MiB) is a fresh `mmap`, and every 4 KiB page faults and is zeroed
  by the kernel on its first write: workload 1's copy into a fresh tensor runs at a fraction of the
  preallocated bandwidth. At 2^24 float32 (64 MiB) every output of every op is fresh; *fresh tensors*
  = faults × 4 KiB ÷ the tensor's bytes. A differentiable step must return its update, new states and
  input gradients as new tensors (Adam: 6 per step). unrollopt's operators ask for transparent huge
  pages on their large outputs (`madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned interior, where the
  system leaves huge pages to madvise; `UNROLLOPT_HUGE_PAGES=0` turns it off): such a tensor faults
  2 MiB at a time, about 5× cheaper than 4 KiB pages, so its faults count far fewer than its fresh
  tensors. jemalloc with decay disabled reuses freed pages (0 faults); what remains there is
  bandwidth and arithmetic.
- *Its operator alone* (workload 6): `torch.ops.unrollopt.adam_`, the call `unrollopt.Adam.step()` makes,
  timed by itself. It runs at or below `torch.optim.Adam(fused=True)`'s time; what `step()` adds is
  Python around the call, as torch's own `step()` has: the group's checked config and the step-count
  tensors (measured at 2^22 on the same tensors: the operator 1.82–1.90 ms, the operator with that
  Python 1.94–1.96 ms, `step()` 2.14–2.29 ms, the rest being `torch.optim.Optimizer`'s step wrapper and
  the grouping of parameters by step). At 1K elements `step()` takes 82 µs and torch's fused step 76 µs.
- *Contention probe* (1 → 2 threads, at the start and at the end of each allocator's run): on a
  quiet machine 2 threads run a small `torch.add` no slower than 1; when
  other processes keep the CPUs busy every parallel region waits for a descheduled thread (a
  scheduler time slice), which inflates every time that is made of many small parallel ops
  (per-tensor dispatch, the plain paths, `torch.optim`'s per-tensor kernels) far more than one
  multi-tensor call. A run whose probe shows this is noisy; compare its ratios, not its times.
- *Full-size tensors* (peak memory): the resident high-water growth over the unroll in units of one
  parameter-size tensor: what the autograd graph keeps per step (fused: the step's inputs; plain:
  also its intermediates), plus, with glibc, freed heap blocks it does not return.
"""


def markdown(results: dict, machine: dict, plot_path: Path) -> str:
    ran = {a: r for a, r in results.items() if r is not None}
    any_r = next(iter(ran.values()))
    out = ["# Benchmarks\n"]
    out.append(
        f"Generated by `{machine['command']}` on {machine['date']} ({machine['mode']} mode, "
        f"{machine['seconds']:.0f} s). Machine: {machine['cpu']}, {machine['cpus']} logical CPUs; "
        f"torch threads: {any_r['threads']}; torch {any_r['torch']}, unrollopt {any_r['unrollopt']}; "
        f"float32 on the CPU. Load average (1 min) at the start and the end of the run: "
        f"{machine['load'][0]:.1f} and {machine['load'][1]:.1f} (above 0 means other processes shared the CPUs).\n"
    )
    alloc_lines = ["- `default`: glibc's malloc."]
    if machine["jemalloc"]:
        alloc_lines.append(f"- `jemalloc`: `LD_PRELOAD={machine['jemalloc']}`, `MALLOC_CONF={JEMALLOC_CONF}` "
                           "(freed pages are kept and reused: no page faults once warm).")  # fmt: skip
    else:
        alloc_lines.append("- `jemalloc`: **not installed** (`apt-get install libjemalloc2`): not measured.")
    out.append("Allocators (each in its own process, all workloads):\n\n" + "\n".join(alloc_lines) + "\n")
    if machine["note"]:
        out.append(f"**Note:** {machine['note']}\n")
    out.append(
        "Times are medians (ms) over repeats after a warm-up call; every reference and ratio in a row "
        "comes from the same run. *faults* is the median number of minor page faults per call "
        "(`getrusage` `ru_minflt`): each one is a fresh 4 KiB page the kernel maps and zeroes, the cost "
        "of writing into newly allocated memory. A *floor* is the bytes an ideal kernel must move "
        "divided by the copy bandwidth of workload 1 (measured at the start and at the end of each "
        "allocator's run; the floors use the higher). In the full run the copy's working set (2 × 256 MiB) is far beyond the caches; on a "
        "shared machine that bandwidth varies with the other processes' memory traffic, so floor ratios are "
        "rougher than ratios between variants measured side by side.\n"
    )

    out.append("## Targets of issue 6\n")
    out.append(table(["target", "allocator", "measured", "same-run values", "target", "", "measured causes"],
                     targets(ran)))  # fmt: skip
    out.append(CAUSES)

    out.append("## 1. Memory bandwidth\n")
    rows = []
    for alloc, r in ran.items():
        for when, b in (("start", r["bandwidth"]), ("end", r["bandwidth_end"])):
            rows.append([alloc, when, f"2^{b['elements'].bit_length() - 1}", num(b["bandwidth"] / 1e9, 1),
                         num(b["fresh_bandwidth"] / 1e9, 1), num(b["fresh_faults"], 0), num(b["region_ms"][0], 3),
                         num(b["region_ms"][1], 3)])  # fmt: skip
    out.append(
        "Copy of float32 values (bytes read + written per second): into a preallocated tensor (the "
        "floors' bandwidth), and into a freshly allocated one (`clone()`), as out-of-place ops do. "
        "Contention probe: `torch.add` of 2^16 values into a preallocated tensor with 1 thread and with "
        f"{any_r['threads']}; on a quiet machine the second is no slower, on a shared one every parallel "
        "region waits for a descheduled thread and it is many times slower (so are all small parallel ops "
        "of this run).\n\n"
    )
    out.append(table(["allocator", "run", "elements", "GB/s (preallocated)", "GB/s (fresh)", "faults per fresh copy",
                      "add 2^16, 1 thread (ms)", f"add 2^16, {any_r['threads']} threads (ms)"], rows))  # fmt: skip

    out.append("## 2–3. One differentiable optimizer step (forward + backward)\n")
    counts = ", ".join(f"{o} {step_floats(o)}" for o in OPTIMIZERS)
    out.append(
        "One float32 tensor; the step's update and new states are differentiated with respect to the "
        "gradient, the states and a 0-d lr (random cotangents). *fused*: `use_accelerated_op=True`; "
        "*plain*: `use_accelerated_op=False` (torch ops); *torch.optim*: the functional form of "
        "`torch.optim.X(differentiable=True)` (single-tensor path; it updates in place, so it gets "
        "non-leaf copies of the parameter and states, included in its time). With k states, an ideal "
        "kernel moves 5 (1 + k) float32 values per element: forward reads g and the k states and writes "
        "the update and k new states; backward reads 1 + k cotangents, re-reads the 1 + k inputs and writes "
        f"their 1 + k gradients (the lr's gradient is a reduction in the same pass). Values per element: {counts}. "
        f"*{NO_LR_GRAD}*: the fused step with an lr that does not require grad (what the lr's gradient "
        "costs). SGD has momentum 0.9; RMSprop is uncentered, without momentum (`torch.optim`'s RMSprop cannot "
        "take a tensor lr, so its row computes no lr gradient).\n\n"
    )
    rows = []
    for alloc, s in each_row(ran, "steps"):
        rows.append([s["optimizer"], alloc, f"2^{s['log2']}", num(s["floor_ms"], 3), num(s["fused"], 3),
                     num(s["plain"], 3), num(s["torch.optim"], 3), num(s[NO_LR_GRAD], 3),
                     num(ratio(s["plain"], s["fused"])),
                     num(ratio(s["torch.optim"], s["fused"])), num(ratio(s["floor_ms"], s["fused"])),
                     f"{num(s['fused_faults'], 0)} / {num(s['plain_faults'], 0)} / "
                     f"{num(s['torch.optim_faults'], 0)}"])  # fmt: skip
    out.append(table(["optimizer", "allocator", "elements", "floor", "fused", "plain", "torch.optim", NO_LR_GRAD,
                      "plain / fused", "torch.optim / fused", "floor / fused",
                      "faults fused / plain / torch.optim"], rows))  # fmt: skip
    out.append(f"\n![time per step vs size]({plot_path.name})\n")

    layers, width, batch = any_r["config"]["model"]
    out.append("## Memory one differentiable step keeps for its backward\n")
    out.append(
        "Bytes per element that the autograd graph of one step (the optimizers of "
        "`bench/optimizer_steps.py`, with weight decay) holds for its backward: the distinct full-size "
        "storages passed to saved-tensor hooks (`torch.autograd.graph.saved_tensors_hooks`), in all and "
        "excluding the step's own inputs (gradient, parameter, states). The fused backward recomputes "
        "the step from its inputs, so it keeps no intermediates; the plain path keeps what autograd needs "
        "for each of its ops (a bool mask counts 1 byte per element). The inputs it keeps are held by the "
        "unrolled computation anyway wherever the outer loss depends on them. Counted once, in the "
        f"`{next(iter(ran))}` run (it does not depend on the allocator).\n\n"
    )
    rows = [[r["optimizer"], num(r["fused"], 1), num(r["fused_intermediates"], 1), num(r["plain"], 1),
             num(r["plain_intermediates"], 1)] for r in any_r["saved"]]  # fmt: skip
    out.append(table(["optimizer", "fused: all", "fused: intermediates", "plain: all", "plain: intermediates"],
                     rows))  # fmt: skip

    out.append("## 4. A model with 100 parameter tensors: 5 unrolled MetaAdam steps + the outer backward\n")
    out.append(
        f"An MLP of {layers} `Linear({width}, {width})` layers with tanh ({2 * layers} parameter tensors, "
        f"{layers * (width + 1) * width} parameters), batches of {batch}: 5 differentiable Adam steps (lr "
        "0.01) on a support batch, then the gradient of a query loss with respect to the initial "
        "parameters. *fused* / *plain*: `unrollopt.MetaAdam(net, use_accelerated_op=...)`; *torch.func*: "
        "`functional_call` + `torch.autograd.grad(create_graph=True)` with Adam written by hand in torch ops.\n\n"
    )
    rows = [[alloc, m["variant"], num(m["ms"]), num(plain), num(ratio(plain, m["ms"])), num(m["faults"], 0)]
            for alloc, m, plain in against_plain(ran, "model", "ms")]  # fmt: skip
    out.append(table(["allocator", "variant", "ms", "plain (ms)", "plain / variant", "faults"], rows))

    log2, steps = any_r["config"]["peak"]
    out.append(f"## 5. Peak memory of a {steps}-step unroll\n")
    out.append(
        f"The unrolled Adam meta-gradient of the anchor workload (below) at 2^{log2} elements "
        f"({2**log2 * 4 / 2**20:g} MiB per tensor), {steps} steps, each variant in a fresh process: the "
        "growth of the resident set's high-water mark (`VmHWM`) over the unroll and its backward, above "
        "the process's resident set before it; the median of 3 processes per variant (*runs* lists all "
        "three).\n\n"
    )
    rows = [[alloc, p["variant"], f"{p['unroll'] / 2**20:.0f}", f"{p['unroll'] / (2**log2 * 4):.1f}",
             f"{plain / 2**20:.0f}", num(ratio(p["unroll"], plain)),
             ", ".join(f"{r / 2**20:.0f}" for r in p.get("runs", [p["unroll"]]))]
            for alloc, p, plain in against_plain(ran, "peak", "unroll")]  # fmt: skip
    out.append(table(["allocator", "variant", "peak growth (MiB)", "in full-size tensors", "plain (MiB)",
                      "variant / plain", "runs (MiB)"], rows))  # fmt: skip

    out.append("## 6. Non-differentiable `Adam.step()`\n")
    out.append(
        "`unrollopt.Adam(..., use_accelerated_op=True).step()` against `torch.optim.Adam(fused=True)` and "
        "`(foreach=True)`, on one tensor and on 100 tensors of the same total size. An ideal kernel moves "
        f"{NONDIFF_FLOATS} values per element (reads p, g, mu, nu; writes p, mu, nu). *unrollopt op*: "
        "`torch.ops.unrollopt.adam_`, the operator `step()` calls, called directly (the kernel without the "
        "Python optimizer).\n\n"
    )
    rows = []
    for alloc, n in each_row(ran, "nondiff"):
        rows.append([alloc, n["tensors"], f"2^{n['elements'].bit_length() - 1}" if n["tensors"] == 1
                     else n["elements"], num(n["floor_ms"], 3), num(n["unrollopt"], 3), num(n["torch fused"], 3),
                     num(n["torch foreach"], 3), num(n["unrollopt op"], 3), num(ratio(n["unrollopt"], n["torch fused"])),
                     num(ratio(n["floor_ms"], n["unrollopt"]))])  # fmt: skip
    out.append(table(["allocator", "tensors", "elements", "floor", "unrollopt", "torch fused", "torch foreach", "unrollopt op",
                      "unrollopt / torch fused", "floor / unrollopt"], rows))  # fmt: skip

    out.append("## 7. One outer iteration of `examples/maml_sinusoid.py`\n")
    out.append(
        "The example's default configuration (MLP 1-40-40-1, meta-batch 4, 10 shots, 5 inner steps, "
        "outer Adam step) written every way `bench/maml.py` knows, timed interleaved; each row's "
        "ratios are against the hand-written `torch.func` + `vmap` loop of the same run. TorchOpt "
        "and higher appear where installed (TorchOpt's compiled op does not load on this torch: its "
        "Python fallback runs).\n\n"
    )
    rows = []
    for alloc, r in ran.items():
        for m in r["maml"]:
            reference = m.get("hand-written, torch.func + vmap")
            for name, ms in sorted(
                ((k, v) for k, v in m.items() if k not in ("inner", "threads")), key=lambda kv: kv[1]
            ):
                rows.append([alloc, m["inner"], m["threads"], name, num(ms), num(ratio(ms, reference))])
    out.append(table(["allocator", "inner", "threads", "variant", "ms", "/ hand-written torch.func + vmap"], rows))

    u0 = any_r["unroll"]
    out.append(f"## Anchor: {u0['steps']}-step unrolled Adam meta-gradient at 2^{u0['log2']} vs `torch.compile`\n")
    out.append(
        "Meta-parameters theta_0 and a 0-d lr; inner loss 0.5 |theta - c|^2 with its gradient written out "
        "(theta - c), Adam steps, outer loss |theta_T - d|^2, gradient with respect to (theta_0, lr). "
        "*fused* / *plain*: `unrollopt.adam(use_accelerated_op=...)` with `apply_updates`; *hand-written*: "
        "textbook Adam in torch ops; *torch.compile*: that hand-written loop compiled (`torch.compile`, "
        f"default inductor backend; compile time excluded by the warm-up); *{NO_LR_GRAD}*: fused, with "
        "the gradient with respect to theta_0 only. An ideal kernel moves "
        f"{UNROLL_FLOATS_PER_STEP} values per element per step (forward reads theta, c, mu, nu and writes "
        "theta', mu', nu'; backward reads three cotangents and the four inputs and writes three gradients).\n\n"
        "Why torch.compile is faster here (read from its generated code, `TORCH_LOGS=output_code`): every "
        "op of this loop is element-wise, so inductor compiles the whole 5-step unroll and the loss into "
        "one forward kernel that keeps no full-size tensor, and the backward into one kernel that "
        "recomputes the 5 steps from theta_0, c and d and allocates 5 full-size buffers. It moves a few "
        "values per element per call, where any implementation that runs one optimizer step at a time "
        "(the floor's ideal per-step kernel included) moves 17 per step. The fused step cannot match "
        "that fusion across steps; in a real model the inner gradient comes from a network's backward, "
        "which breaks it.\n\n"
    )
    rows = []
    for alloc, r in ran.items():
        u = r["unroll"]
        rows.append([alloc, num(u["floor_ms"]), num(u["fused"]), num(u["plain"]), num(u["hand-written"]),
                     num(u["torch.compile"]), num(u[NO_LR_GRAD]), num(ratio(u["plain"], u["fused"])),
                     num(ratio(u["torch.compile"], u["fused"])), num(ratio(u["floor_ms"], u["fused"])),
                     f"{num(u['fused_faults'], 0)} / {num(u['plain_faults'], 0)} / "
                     f"{num(u.get('torch.compile_faults'), 0)}"])  # fmt: skip
    out.append(table(["allocator", "floor", "fused", "plain", "hand-written", "torch.compile", NO_LR_GRAD, "plain / fused",
                      "torch.compile / fused", "floor / fused", "faults fused / plain / compile"], rows))  # fmt: skip
    errors = {a: r["unroll"].get("compile_error") for a, r in ran.items() if r["unroll"].get("compile_error")}
    for alloc, error in errors.items():
        out.append(f"\ntorch.compile ({alloc}): {error}\n")

    small = [(alloc, u) for alloc, r in ran.items() for u in r.get("unroll_small", [])]
    if small:
        out.append("\n### The same at 2^16, with 1 thread and more\n")
        rows = [[alloc, u["threads"], num(u["fused"]), num(u["plain"]), num(u["hand-written"]), num(u["torch.compile"]),
                 num(ratio(u["fused"], u["hand-written"])), num(ratio(u["fused"], u["torch.compile"]))]
                for alloc, u in small]  # fmt: skip
        out.append(table(["allocator", "threads", "fused", "plain", "hand-written", "torch.compile",
                          "fused / hand-written", "fused / torch.compile"], rows))  # fmt: skip
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    """Time per differentiable step against size, per optimizer: variants by
    colour, allocators by line style, the floor in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = {a: r for a, r in results.items() if r is not None}
    fig, axes = plt.subplots(1, len(OPTIMIZERS), figsize=(5 * len(OPTIMIZERS), 4.5), constrained_layout=True)
    colours = {"fused": "tab:blue", "plain": "tab:red", "torch.optim": "tab:green"}
    styles = {"default": "-", "jemalloc": "--"}
    for ax, optimizer in zip(axes, OPTIMIZERS):
        for alloc, r in ran.items():
            rows = sorted((s for s in r["steps"] if s["optimizer"] == optimizer), key=lambda s: s["log2"])
            x = [2 ** s["log2"] for s in rows]
            for variant, colour in colours.items():
                ax.plot(
                    x, [s[variant] for s in rows], styles[alloc], color=colour, marker="o", label=f"{variant}, {alloc}"
                )
            ax.plot(x, [s["floor_ms"] for s in rows], styles[alloc], color="black", lw=1, label=f"floor, {alloc}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("elements (float32)")
        ax.set_ylabel("ms per step (forward + backward)")
        ax.set_title(optimizer)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("One differentiable optimizer step: median time (solid: glibc malloc, dashed: jemalloc)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
