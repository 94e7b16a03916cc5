"""setuptools file that Beam workers install the toolkit with.

    python pipelines/build_corpus.py ... --runner=DataflowRunner \
        --setup_file=./beam_setup.py --temp_location=gs://BUCKET/tmp

Workers need the operators (``filters/``) and the Beam wiring (``pipelines/``)
plus their runtime dependencies, and ``tokenizer/`` for its sampling and packing
jobs; the trainer and model packages are not shipped (the data side never imports
them).  Dependencies are read from
``pyproject.toml`` so the two lists cannot drift apart.
"""
import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
# Packages that the data-side workers never import.
_TRAINING_ONLY = re.compile(r"^(jax|flax|optax|orbax|tensorboardx|lightgbm|grain|tensorflow-datasets)\b", re.I)


def _requirements():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [d for d in deps if not _TRAINING_ONLY.match(d)]


setuptools.setup(
    name="corpusforge-workers",
    version="0.1.0",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "filters", "filters.*", "tokenizer",
                                               "tokenizer.*"]),
    package_data={"": ["*.yaml", "*.txt"]},
    install_requires=_requirements(),
)
