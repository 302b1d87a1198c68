"""The transforms and flows the bijection tests build, by name (shared by the inverse tests)."""

import jax
from flax import struct

import maf_jax

FEATURES = 5
CONTEXT = 3
SPLINE = maf_jax.RationalQuadraticSpline(bins=4, bound=3.0)


@struct.dataclass
class MixedScaleAffine:
    """A monotonic affine map with a parameter of shape (2,): its log-scale is the
    bounded mean of two raw scales, so parameters of every rank go through the
    inverses."""

    shift: jax.Array
    scales: jax.Array  # (*, features, 2)

    def _affine(self):
        return maf_jax.MonotonicAffineTransform(self.shift, self.scales.mean(-1))

    def forward_and_log_det(self, x):
        return self._affine().forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        return self._affine().inverse_and_log_det(y)

    def forward(self, x):
        return self._affine().forward(x)

    def inverse(self, y):
        return self._affine().inverse(y)


# name: (flow or transform, constructor kwargs)
CONFIGS = {
    "default": ("transform", {}),
    "passes1": ("transform", dict(passes=1, context=CONTEXT)),
    "passes2": ("transform", dict(passes=2)),
    "passes3_context": ("transform", dict(passes=3, context=CONTEXT)),
    "order": ("transform", dict(order=[2, 0, 4, 1, 3])),
    "odd_hidden_elu": ("transform", dict(hidden_features=(7, 11), activation=jax.nn.elu)),
    "narrow": ("transform", dict(hidden_features=(3,), context=CONTEXT)),
    "linear": ("transform", dict(hidden_features=())),
    "residual": ("transform", dict(residual=True, hidden_features=(8, 8, 6), context=CONTEXT)),
    "residual_passes3_elu": (
        "transform",
        dict(residual=True, hidden_features=(6, 9), passes=3, activation=jax.nn.elu),
    ),
    "vector_parameter": (
        "transform",
        dict(univariate=MixedScaleAffine, shapes=((), (2,)), passes=3, context=CONTEXT),
    ),
    "spline": (
        "transform",
        dict(univariate=SPLINE, shapes=SPLINE.shapes, passes=3, context=CONTEXT),
    ),
    "maf": ("flow", dict(transforms=3)),
    "maf_context": ("flow", dict(transforms=2, context=CONTEXT, passes=3)),
    "maf_randperm": ("flow", dict(transforms=3, randperm=True, activation=jax.nn.elu)),
    "maf_order": ("flow", dict(transforms=2, order=[1, 3, 0, 2, 4])),
    "nsf": ("flow", dict(transforms=2, univariate=SPLINE, shapes=SPLINE.shapes)),
}
