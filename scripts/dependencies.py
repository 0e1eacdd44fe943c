"""Print pyproject.toml's requirements, one a line, for installing them before the code (Dockerfile, .ci/run).

python scripts/dependencies.py [EXTRA ...]          the build backend, the dependencies and the extras', except torch
python scripts/dependencies.py --torch [EXTRA ...]  only torch's requirement, if an extra needs it

torch is apart because it comes from PyTorch's own index (the Dockerfile's TORCH_INDEX), which
serves the CUDA builds that PyPI does not.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(extras: list[str]) -> list[str]:
    """Return the build requirements, the dependencies and those of ``extras``, in pyproject's order."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text("utf-8"))
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; known: {', '.join(sorted(optional))}")
    found = [*pyproject["build-system"]["requires"], *project["dependencies"]]
    for extra in extras:
        found += optional[extra]
    return list(dict.fromkeys(found))


def is_torch(requirement: str) -> bool:
    """Whether ``requirement`` names torch itself (not torchvision or the like)."""
    return re.match(r"torch(?![\w.-])", requirement) is not None


def main(argv: list[str]) -> None:
    torch_only = argv[:1] == ["--torch"]
    # EXTRAS may arrive as one comma-separated build argument ("local,dev") or several words.
    extras = [e for arg in (argv[1:] if torch_only else argv) for e in arg.split(",") if e]
    for requirement in requirements(extras):
        if is_torch(requirement) == torch_only:
            print(requirement)


if __name__ == "__main__":
    main(sys.argv[1:])
