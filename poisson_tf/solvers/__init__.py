"""The reference solvers of the Q1 problem (docs/design.rst s.5): solve() runs the assembled AMG-CG (amg) or the
matrix-free geometric multigrid PCG (gmg, on the operator of operator.py) on the same discretization
(assembly), and ReferenceStore caches their solutions (store)."""
from __future__ import annotations

from poisson_tf.solvers.assembly import dirichlet_values, energy, mass, stiffness  # noqa: F401
from poisson_tf.solvers.problem import SolveRecord, check_problem  # noqa: F401
from poisson_tf.solvers.dispatch import AUTO_GMG_RESOLUTION, METHODS, solve  # noqa: F401
from poisson_tf.solvers.store import ReferenceStore, default_cache_dir  # noqa: F401
