"""The README's Python snippets, run on 4 virtual CPU devices by test_readme.py.

XLA_FLAGS=--xla_force_host_platform_device_count=4 is set for this process only.
"""

import re
from pathlib import Path

from check_runner import report

README = (Path(__file__).parents[1] / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def check_quickstart():
    namespace = {}
    exec("\n".join(blocks(section("Quickstart"), "python")), namespace)
    assert namespace["x"].shape == (1000, 3) and namespace["log_p"].shape == (1000,)


def check_splines_and_zuko():
    import numpy as np

    namespace = {}
    code = blocks(section("Quickstart"), "python") + blocks(
        section("Neural spline flows and zuko"), "python"
    )
    exec("\n".join(code), namespace)
    assert namespace["x_nsf"].shape == (500, 3)
    np.testing.assert_allclose(
        namespace["ours_log_p"], namespace["zuko_log_p"], rtol=1e-5, atol=1e-5
    )
    assert type(namespace["back"]).__name__ == "NSF"


def check_scaling_out():
    import jax
    import numpy as np

    namespace = {}
    exec("\n".join(blocks(section("Scaling out"), "python")), namespace)
    assert jax.device_count() == 4 and namespace["n"] == 4
    assert namespace["samples"].shape == (8, 100, 3)
    loss, opt, params = namespace["loss"], namespace["opt"], namespace["params"]
    x, c = (np.asarray(namespace[k]) for k in ("x", "c"))

    @jax.jit
    def one_device(params, state):
        grads = jax.grad(loss)(params, x, c)
        updates, state = opt.update(grads, state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates)

    reference = jax.tree.leaves(one_device(params, opt.init(params)))
    before = jax.tree.leaves(params)
    moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(before, reference))
    assert moved > 1e-4, moved  # the step changed the parameters
    trained = {
        "pmap": [a[i] for a in jax.tree.leaves(namespace["p_pmap"]) for i in range(4)],
        "jit": jax.tree.leaves(namespace["p_jit"]),
        "shard_map": jax.tree.leaves(namespace["p_shard_map"]),
    }
    for name, leaves in trained.items():
        expected = reference if name != "pmap" else [r for r in reference for _ in range(4)]
        for a, b in zip(leaves, expected, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)


def check_commands():
    import shlex

    from maf_jax.cli.options import parser

    lines = [
        line
        for title in ("Command line", "Scaling out")
        for block in blocks(section(title), "bash")
        for line in block.splitlines()
        if line.startswith(("maf-jax", "srun maf-jax"))
    ]
    assert len(lines) >= 10, lines
    for line in lines:
        words = shlex.split(line, comments=True)
        words = words[words.index("maf-jax") + 1 :]
        try:
            parser().parse_args(words)
        except SystemExit:
            raise AssertionError(f"the README's command does not parse: {line}") from None


if __name__ == "__main__":
    report(
        {
            "quickstart": check_quickstart,
            "splines_and_zuko": check_splines_and_zuko,
            "scaling_out": check_scaling_out,
            "commands": check_commands,
        }
    )
