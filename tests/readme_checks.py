"""The snippets of the README and of the docs' guides, run on 4 virtual CPU devices.

Run by test_readme.py: XLA_FLAGS=--xla_force_host_platform_device_count=4 is set for
this process only. This process never imports torch: the README's torch side runs in
a process of its own.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from check_runner import report

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def section(title: str) -> str:
    """The text under the heading ``title`` in the README or a docs page."""
    for page in PAGES:
        lines, level, fenced, found = page.read_text().splitlines(), None, False, []
        for line in lines:
            fenced ^= line.startswith("```")
            heading = not fenced and re.match(r"(#+) (.*)", line)
            if level is None and heading and heading.group(2) == title:
                level = len(heading.group(1))
            elif level is not None:
                if heading and len(heading.group(1)) <= level:
                    break
                found.append(line)
        if level is not None:
            return "\n".join(found) + "\n"
    raise AssertionError(f"no page has a section {title!r}")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def check_quickstart():
    namespace = {}
    exec("\n".join(blocks(section("Quickstart"), "python")), namespace)
    assert namespace["x"].shape == (1000, 3) and namespace["log_p"].shape == (1000,)
    import jax
    from flax import nnx

    # the functional idiom trains plain dicts, and nnx.update puts them back
    params, flow = namespace["params"], namespace["flow"]
    assert type(params) is dict
    trained = jax.tree.leaves(params)
    in_module = jax.tree.leaves(nnx.state(flow, nnx.Param))
    assert len(in_module) == len(trained) > 0
    assert all((a == b).all() for a, b in zip(in_module, trained, strict=True))


def check_zuko():
    import numpy as np

    torch_side, jax_side = blocks(section("Moving models between zuko and maf_jax"), "python")
    with tempfile.TemporaryDirectory() as folder:
        probe = "\nimport sys; assert 'jax' not in sys.modules, 'the torch side loaded JAX'"
        result = subprocess.run(
            [sys.executable, "-c", torch_side + probe], cwd=folder, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        namespace, cwd = {}, os.getcwd()
        os.chdir(folder)
        try:
            exec(jax_side, namespace)
        finally:
            os.chdir(cwd)
        import jax

        x = jax.random.normal(jax.random.key(0), (5, 3))
        c = jax.random.normal(jax.random.key(1), (5, 4))
        back = namespace["load_zuko"](Path(folder) / "back.npz")
        np.testing.assert_array_equal(back(c).log_prob(x), namespace["flow"](c).log_prob(x))
    assert "torch" not in sys.modules


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
            "zuko": check_zuko,
            "scaling_out": check_scaling_out,
            "commands": check_commands,
        }
    )
