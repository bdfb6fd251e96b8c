"""Packaging that pyproject.toml cannot say: the metadata lives there, this file says what the
wheel holds.

- dtrain and its subpackages.
- The data-prep tool, package `dtrain_prep` (a dtrain-owned name: a bare top-level `data_prep`
  would collide with other projects' modules in site-packages), from the top-level data_prep/
  folder the product layout keeps for it.
- configs/ and launch/ (the top-level folders stay the source of truth) copied into the package
  as dtrain/_resources/, which dtrain.resources reads when there is no checkout around.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

RESOURCE_DIRS = ("configs", "launch")


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        for name in RESOURCE_DIRS:
            self.copy_tree(name, str(Path(self.build_lib) / "dtrain" / "_resources" / name))


setup(
    packages=find_packages(include=["dtrain", "dtrain.*"]) + find_packages("data_prep"),
    package_dir={"dtrain_prep": "data_prep/dtrain_prep"},
    cmdclass={"build_py": BuildWithResources},
)
