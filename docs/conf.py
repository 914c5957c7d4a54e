"""Sphinx configuration of the poisson_tf documentation (`make docs`: sphinx-build -W, warnings are errors).

Nothing here reaches the network: no intersphinx, and the theme (furo) is installed by the `docs` extra.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # autodoc imports the package from this checkout, installed or not
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is not a docs warning


def _version() -> str:
    import re

    with open(os.path.join(ROOT, "poisson_tf", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def _allow_repeated_flags() -> None:
    """The four command lines each define their flags in absl's one registry (--model_dir in two of them): they
    never run in one process, but autodoc imports all four into this one, so a repeated name replaces the first."""
    from absl import flags

    setitem = flags.FlagValues.__setitem__

    def replace(self, name, flag):
        flag.allow_override = True
        setitem(self, name, flag)

    flags.FlagValues.__setitem__ = replace


_allow_repeated_flags()

project = "poisson_tf"
author = "the poisson_tf developers"
copyright = "the poisson_tf developers"
release = version = _version()

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
root_doc = "index"

# Google-style docstrings (Args / Returns / Raises), the house style of poisson_tf.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
# Only the package's own docstrings: an override without one (DataParallelTrainer.compile) does not inherit Keras'
# Markdown docstring.
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = f"poisson_tf {release}"
html_static_path = []
