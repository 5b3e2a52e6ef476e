"""Installable package: `transforms` (the ScoreLongCLIP library) and `pipeline` (the ready job).

Also used as `--setup_file ./setup.py` when submitting to Dataflow.
"""

from setuptools import find_packages, setup

setup(
    name="longclip-beam",
    version="0.1.0",
    description="Score image / long-caption alignment with LongCLIP as an Apache Beam transform",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["transforms", "transforms.*", "pipeline", "pipeline.*"]),
    package_data={"transforms.testing": ["*.json"]},
    # Every package the code imports directly (requirements.txt pins the versions tested).
    install_requires=[
        "apache-beam[gcp]>=2.77.0,<3",
        "torch>=2.4",
        "torchvision",
        "open_clip_torch>=3.3.0,<4",
        "pillow>=10",
        "huggingface_hub>=0.24",
        "safetensors>=0.4",
        "ftfy>=6",
        "regex",
        "sentencex>=1.0.32,<2",
        "pyarrow>=14",
        "numpy>=1.24",
        "scipy",
        "matplotlib>=3.8",
    ],
    entry_points={"console_scripts": ["score-longclip=pipeline.__main__:cli"]},
)
