"""The torch side of tests/interop/test_zuko_file.py, in a process without JAX.

``python zuko_checks.py export FOLDER``: builds zuko flows, writes each with
``zuko_file.save`` and zuko's own log_prob and inverse on fixed inputs.
``python zuko_checks.py import FOLDER``: reads every ``*.maf.npz`` (written by
``save_zuko``) with ``zuko_file.load`` and writes zuko's log_prob and inverse of it.
Prints one JSON line: the flows it handled and whether JAX was ever imported.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import zuko

from maf_jax.interop import zuko_file

ADJACENCY = np.eye(5, dtype=bool)
ADJACENCY[[2, 2, 4, 3], [0, 1, 2, 1]] = True
# name: (constructor, features, context, kwargs)
FLOWS = {
    "maf_context_randperm": (
        zuko.flows.MAF, 4, 2, dict(transforms=2, randperm=True, hidden_features=(9, 7))
    ),
    "nsf_residual_elu": (
        zuko.flows.NSF, 3, 1,
        dict(bins=4, residual=True, hidden_features=(8, 8), activation=torch.nn.ELU),
    ),
    "maf_adjacency": (
        zuko.flows.MAF, 5, 0, dict(adjacency=torch.from_numpy(ADJACENCY), hidden_features=(12,))
    ),
}  # fmt: skip


def inputs(features, context, rows=8):
    g = torch.Generator().manual_seed(features + 10 * context)
    x = 1.5 * torch.randn(rows, features, generator=g)
    c = torch.randn(rows, context, generator=g) if context else None
    return x, c, torch.randn(rows, features, generator=g)


def evaluate(flow, folder: Path, name: str, features: int, context: int) -> None:
    x, c, noise = inputs(features, context)
    with torch.no_grad():
        arrays = dict(
            x=x.numpy(),
            noise=noise.numpy(),
            log_prob=flow(c).log_prob(x).numpy(),
            samples=flow(c).transform.inv(noise).numpy(),
        )
    if c is not None:
        arrays["c"] = c.numpy()
    np.savez(folder / f"{name}.values.npz", **arrays)


def export(folder: Path) -> list[str]:
    for name, (cls, features, context, kwargs) in FLOWS.items():
        torch.manual_seed(len(name))
        flow = cls(features, context, **kwargs)
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.1 * torch.randn_like(p))
        zuko_file.save(flow, folder / f"{name}.zuko.npz")
        evaluate(flow, folder, name, features, context)
    return list(FLOWS)


def load(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.maf.npz")):
        name = path.name.removesuffix(".maf.npz")
        flow = zuko_file.load(path)
        t = flow.transform.transforms[0]
        features = t.hyper[-1].out_features // t.total
        context = t.hyper[0].in_features - features
        evaluate(flow, folder, name, features, context)
        names.append(name)
    return names


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    names = {"export": export, "import": load}[command](folder)
    print(json.dumps({"flows": names, "jax": "jax" in sys.modules or "flax" in sys.modules}))
