"""JAX + optax on bench/maml.py's workload, the peer of its compiled rows
(bench/maml_compiled.py): one outer iteration of MAML on sinusoids (MLP
1-40-40-1, meta-batch 4, 10 shots, 5 inner steps at lr 0.01, outer Adam step
at lr 3e-3), written the JAX way: ``jit`` of ``value_and_grad`` of the mean
over ``vmap`` of the tasks' adapted query losses, with the inner
``optax.sgd`` / ``optax.adam`` and the outer ``optax.adam`` step inside the
jitted function. Each iteration draws a meta-batch on the host (numpy), as
the PyTorch rows draw theirs, and waits for the result.

Runs in a process of its own, on the first ``--threads`` CPUs (XLA's thread
pools cannot be resized once made), and prints JSON: for each inner
optimizer, the median ms per outer iteration and the first call's seconds.

    python bench/maml_jax.py --threads 1 [--repeats 100]   (needs jax and optax)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--inner", nargs="+", default=["sgd", "adam"])
    args = parser.parse_args()
    # Before jax is imported: its CPU thread pools are sized from these.
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={args.threads}"
    )
    import jax
    import numpy as np

    print(json.dumps({"jax": jax.__version__, **{inner: measure(inner, args.repeats, np) for inner in args.inner}}))


def measure(inner: str, repeats: int, np) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)
    sizes = [(1, 40), (40, 40), (40, 1)]
    # torch.nn.Linear's initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    meta = [
        (jnp.asarray(rng.uniform(-b, b, (o, i)), jnp.float32), jnp.asarray(rng.uniform(-b, b, (o,)), jnp.float32))
        for i, o in sizes
        for b in [1 / math.sqrt(i)]
    ]

    def mlp(params, x):
        for k, (w, b) in enumerate(params):
            x = x @ w.T + b
            if k < len(params) - 1:
                x = jax.nn.relu(x)
        return x

    def mse(params, x, y):
        return jnp.mean((mlp(params, x) - y) ** 2)

    inner_opt = optax.sgd(0.01) if inner == "sgd" else optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)
    outer_opt = optax.adam(3e-3)

    def task_loss(params, xs, ys, xq, yq):
        state = inner_opt.init(params)
        for _ in range(5):
            updates, state = inner_opt.update(jax.grad(mse)(params, xs, ys), state, params)
            params = optax.apply_updates(params, updates)
        return mse(params, xq, yq)

    def meta_loss(params, batch):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(params, *batch))

    @jax.jit
    def outer_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(meta_loss)(params, batch)
        updates, opt_state = outer_opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, grads

    def sample():
        amplitude = rng.uniform(0.1, 5.0, (4, 1, 1))
        phase = rng.uniform(0.0, math.pi, (4, 1, 1))
        xs, xq = rng.uniform(-5.0, 5.0, (4, 10, 1)), rng.uniform(-5.0, 5.0, (4, 10, 1))
        f = lambda x: amplitude * np.sin(x - phase)  # noqa: E731
        return tuple(jnp.asarray(a, jnp.float32) for a in (xs, f(xs), xq, f(xq)))

    state = {"params": meta, "opt": outer_opt.init(meta)}

    def run():
        params, opt, grads = outer_step(state["params"], state["opt"], sample())
        jax.block_until_ready(grads)
        state.update(params=params, opt=opt)

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * statistics.median(times), "first_call_s": first}


if __name__ == "__main__":
    main()
