"""sam2ui's dependency ranges, read from their one source: pyproject.toml.

    python scripts/deps.py requirements          # rewrite requirements.txt (the Space's list)
    python scripts/deps.py requirements --check  # exit 1 when requirements.txt is out of date
    python scripts/deps.py lowest video app      # pins at each lower bound (a pip constraints file)
    python scripts/deps.py names video app       # the distributions, unversioned (for --upgrade)

`lowest` and `names` take extras of the project; the core dependencies always come with them.
torch is left out of both: the test jobs keep the torch build already installed (a CPU build on
a CPU machine), because pip would otherwise fetch a CUDA build of several GB.

Runs on Python 3.11+ (tomllib) and needs nothing beyond the standard library.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "requirements.txt"
# What the Hugging Face Space installs beyond its own gradio (README's sdk_version): the core
# dependencies and the video extra. The Space imports sam2ui from the repository's root.
SPACE_EXTRAS = ("video",)
# Left to the machine: see the module docstring.
KEEP_INSTALLED = {"torch"}

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;]*)"
)


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)["project"]


def requirements(extras: tuple[str, ...] = (), *, each_once: bool = True) -> list[str]:
    """The core dependencies and those of ``extras``, in order, each distribution once (or,
    with ``each_once=False``, every mention of it); the project's own extras (``sam2ui[app]``
    inside another extra) are expanded."""
    meta = project()
    own = canonical(meta["name"])
    optional = meta.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            match = _REQUIREMENT.match(req)
            if match is None:
                raise ValueError(f"cannot read the requirement {req!r} in pyproject.toml")
            name = canonical(match["name"])
            if name == own:
                for extra in (match["extras"] or "").split(","):
                    add(optional[extra.strip()])
            elif name not in seen or not each_once:
                seen.add(name)
                out.append(req.strip())

    add(meta["dependencies"])
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}: {sorted(optional)}")
        add(optional[extra])
    return out


def lower_bound(req: str) -> tuple[str, str] | None:
    """(name, version) of ``req``'s ``>=`` bound, or None when it has none."""
    match = _REQUIREMENT.match(req)
    assert match is not None
    bound = re.search(r">=\s*([0-9][^,\s]*)", match["spec"])
    return (canonical(match["name"]), bound[1]) if bound else None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:4])


def lowest(extras: tuple[str, ...]) -> dict[str, str]:
    """Each distribution's lower bound over ``extras``: the highest where several parts of the
    project ask for the same one (the app extra raises huggingface_hub's)."""
    bounds: dict[str, str] = {}
    for req in requirements(extras, each_once=False):
        bound = lower_bound(req)
        if bound is None or bound[0] in KEEP_INSTALLED:
            continue
        name, version = bound
        if name not in bounds or _release(version) > _release(bounds[name]):
            bounds[name] = version
    return bounds


def space_requirements() -> str:
    lines = [
        "# Generated from pyproject.toml by `python scripts/deps.py requirements`: edit the ranges",
        "# there. The Hugging Face Space installs these beside its own gradio (README's",
        "# sdk_version) and imports sam2ui from the repository's root.",
        *requirements(SPACE_EXTRAS),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, *rest = argv
    if command == "requirements":
        text = space_requirements()
        if rest == ["--check"]:
            if REQUIREMENTS.read_text(encoding="utf-8") != text:
                print("requirements.txt is out of date: run `python scripts/deps.py requirements`")
                return 1
            return 0
        REQUIREMENTS.write_text(text, encoding="utf-8")
        return 0
    reqs = requirements(tuple(rest))
    if command == "lowest":
        for name, version in lowest(tuple(rest)).items():
            print(f"{name}=={version}")
        return 0
    if command == "names":
        for req in reqs:
            match = _REQUIREMENT.match(req)
            assert match is not None
            if canonical(match["name"]) not in KEEP_INSTALLED:
                print(canonical(match["name"]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
