"""pip-installable poisson_tf. Horovod is not listed: scripts/setup.sh builds it against the installed TF."""
import os
import re

from setuptools import find_packages, setup

TENSORFLOW_VERSION = "2.18.1"  # Horovod 0.28.1 builds only against TF <= 2.18 (docs/performance.rst, "The stack")
GPU = os.environ.get("POISSON_TF_DEVICE", "cpu").lower() == "gpu"
# poisson_tf.modeldir.SHIPPED_FILES (not imported here: setup.py runs before the package's dependencies exist).
PRETRAINED_FILES = ("model.keras", "config.json", "val_samples.h5", "MODEL_CARD.md", "fingerprint.json")


def version() -> str:
    with open(os.path.join(os.path.dirname(__file__), "poisson_tf", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


setup(
    name="poisson_tf",
    version=version(),
    description="Data-free neural solvers for the generalized 3D Poisson equation, multigrid-trained with Horovod",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.rst")).read(),
    long_description_content_type="text/x-rst",
    packages=find_packages(include=["poisson_tf", "poisson_tf.*"]),
    # The shipped solvers (poisson_tf/pretrained/<name>/, the files of poisson_tf.modeldir.SHIPPED_FILES); MANIFEST.in
    # puts them into the sdist too.
    package_data={"poisson_tf.pretrained": [f"*/{name}" for name in PRETRAINED_FILES]},
    python_requires=">=3.11,<3.13",
    install_requires=[
        # The tested set. On GPU machines set POISSON_TF_DEVICE=gpu and install the `gpu` extra instead of
        # tensorflow-cpu (both packages provide the `tensorflow` module; they must not be mixed).
        *([] if GPU else [f"tensorflow-cpu=={TENSORFLOW_VERSION}"]),
        "keras==3.15.1",
        "numpy==2.0.2",
        "h5py==3.16.0",
        "absl-py==2.5.1",
        "tensorboard==2.18.0",
        "scipy==1.17.1",
        "pyamg==5.4.1",
        "matplotlib==3.11.2",
        "psutil==7.2.2",
    ],
    extras_require={
        "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW_VERSION}"],
        "test": ["pytest==9.2.0", "ruff==0.17.6"],
        # `make docs`: the documentation site (Sphinx, the furo theme) and `twine check` of the sdist (built by build).
        "docs": ["sphinx==9.0.4", "furo==2025.12.19", "twine==7.0.0", "build==1.6.1"],
    },
    entry_points={
        "console_scripts": [
            "poisson-tf-solve=poisson_tf.cli.solve:run",
            "poisson-tf-train=poisson_tf.cli.train:run",
            "poisson-tf-evaluate=poisson_tf.cli.evaluate:run",
            "poisson-tf-predict=poisson_tf.cli.predict:run",
        ],
    },
)
