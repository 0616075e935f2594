"""recbole-lumos: LUMOS federated sequential recommendation as a RecBole plugin.

RecBole 1.2.1 itself is NOT listed here: its metadata pins ``ray<=2.6.3``, which cannot import on numpy 2 /
setuptools >= 81, and pip refuses to resolve it together with ``ray[tune]>=2.40``. ``make setup`` therefore
installs ``recbole==1.2.1 --no-deps`` after this package; its real requirements are listed below instead.
"""
from setuptools import find_packages, setup

RECBOLE_REQUIREMENTS = [  # recbole 1.2.1's own requirements, minus its ray pin
    "scipy>=1.6.0",
    "tqdm>=4.48.2",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "scikit-learn>=0.23.2",
    "pyyaml>=5.1.0",
    "tensorboard>=2.5.0",
    "thop>=0.1.1.post2207130030",
    "tabulate>=0.8.10",
    "plotly>=4.0.0",
    "texttable>=0.9.0",
    "psutil>=5.9.0",
]

setup(
    name="recbole-lumos",
    version="0.1.0",
    description="LUMOS: federated sequential recommendation with on-device LLM views, as a RecBole plugin",
    packages=find_packages(include=["recbole_lumos", "recbole_lumos.*"]),
    # the yaml ships inside the package (as RecBole's does): an installed copy finds it from any folder
    package_data={"recbole_lumos": ["properties/*.yaml", "properties/*/*.yaml"]},
    entry_points={"console_scripts": ["recbole-lumos = recbole_lumos.cli:main"]},
    python_requires=">=3.10",
    install_requires=RECBOLE_REQUIREMENTS
    + [
        "torch>=2.6",
        "numpy>=2",
        # pandas 3's copy-on-write and Series.agg(len) break RecBole 1.2.1's Dataset in a dozen places
        # (STACK.md #3, #4); patching them all would fork that class, so we pin pandas 2.
        "pandas>=2.2,<3",
        "ray[tune]>=2.40",
        "transformers>=4.46",
        "peft>=0.13",
        "gguf>=0.10",
        "sentence-transformers>=3",
        "matplotlib>=3.8",
        # DP-FedAvg's epsilon comes from a maintained accountant (RDP of the subsampled Gaussian), never from a
        # formula of ours. Opacus over Google's dp-accounting: that one pins attrs<24 (below what jsonschema,
        # under Ray, installs) and adds dm-tree; Opacus adds only opt-einsum to the torch we have. Major pinned:
        # the accountant's history format (noise multiplier, sample rate, steps) is Opacus 1.x API.
        "opacus>=1.5,<2",
    ],
    extras_require={"test": ["pytest>=8"]},
)
