"""Release check of one package: build it alone, install it alone, test the installed wheel.

The same steps the release workflow runs before it publishes (``.github/workflows/release.yml``):

1. Build the package with ``uv build --package NAME --no-sources`` (wheel and sdist) into
   the wheel directory, and its workspace dependencies too, so the sibling wheels can be
   found there before they are on PyPI (``--reuse`` keeps wheels already built for the
   current versions, as ``.ci/run`` does after one ``make build``).
2. Create a fresh virtual environment outside the workspace and install the built wheel
   with ``--find-links`` on the wheel directory: its sibling ``funnel-*`` requirements
   (compatible ranges such as ``funnel-tokenstore>=0.2,<0.3``) resolve from that
   directory or from PyPI, everything else from PyPI. Nothing comes from the source tree.
3. Install the package's own ``test`` dependency group (its ``pyproject.toml``) and check
   that the package imports from the virtual environment with the wheel's version.
4. Run the package's own tests with that environment's Python, from the repository root
   (shared test support in ``tests/support``, the npm peers in ``tools/node_modules``).
5. For ``funnel-server``: start the installed ``funnel-server --stdio`` and list its tools
   with the official MCP SDK client (``tools/release/stdio_smoke.py``).

With ``--siblings-from-index`` only the package itself is built and the funnel packages
it requires must come from PyPI, at versions in its ranges: what the release workflow
checks before publishing, and what a user's ``pip install`` will meet.

Usage: ``python3 tools/release/check.py funnel-auth [--wheels DIR] [--reuse]``
(``make release-check PACKAGE=funnel-auth``). Exit code 0 when every step passed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Workspace member name -> its directory.
MEMBERS = {
    "funnel-tokenstore": REPO / "packages" / "funnel-tokenstore",
    "funnel-auth": REPO / "packages" / "funnel-auth",
    "funnel-transports": REPO / "packages" / "funnel-transports",
    "funnel-proxy": REPO / "packages" / "funnel-proxy",
    "funnel-server": REPO / "apps" / "server",
}


def project(name: str) -> dict[str, object]:
    """The ``[project]`` table of a member's pyproject.toml."""
    data = tomllib.loads((MEMBERS[name] / "pyproject.toml").read_text())
    table: dict[str, object] = data["project"]
    return table


def version(name: str) -> str:
    """The version a member's pyproject.toml declares (its one source of truth)."""
    return str(project(name)["version"])


def workspace_deps(name: str) -> list[str]:
    """The member itself and every member it depends on, transitively, dependencies first."""
    order: list[str] = []

    def visit(member: str) -> None:
        if member in order:
            return
        requirements = project(member).get("dependencies", [])
        assert isinstance(requirements, list)
        for requirement in requirements:
            dep = str(requirement).split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
            if dep in MEMBERS:
                visit(dep)
        order.append(member)

    visit(name)
    return order


def wheel_path(wheels: Path, name: str) -> Path:
    """Where the wheel of ``name`` at its current version is (or will be) in ``wheels``."""
    return wheels / f"{name.replace('-', '_')}-{version(name)}-py3-none-any.whl"


def run(
    *command: str | os.PathLike[str], cwd: Path = REPO, env: dict[str, str] | None = None
) -> None:
    """Run a command, echoing it; exit with its code when it fails."""
    shown = " ".join(str(part) for part in command)
    print(f"release-check: $ {shown}", flush=True)
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        print(f"release-check: FAILED ({result.returncode}): {shown}", file=sys.stderr)
        sys.exit(result.returncode)


def build(name: str, wheels: Path, *, reuse: bool, alone: bool) -> None:
    """Build ``name`` (and, unless ``alone``, the members it needs) into ``wheels``."""
    for member in [name] if alone else workspace_deps(name):
        if reuse and wheel_path(wheels, member).is_file():
            continue
        run("uv", "build", "--package", member, "--no-sources", "--out-dir", wheels, "-q")
        if not wheel_path(wheels, member).is_file():
            print(
                f"release-check: uv build made no {wheel_path(wheels, member).name}",
                file=sys.stderr,
            )
            sys.exit(1)


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install(name: str, wheels: Path, venv: Path) -> Path:
    """A fresh venv with the built wheel of ``name`` and its test group; returns its Python."""
    # The interpreter the workspace uses, so the check runs on the same Python as CI.
    python = subprocess.run(
        ["uv", "python", "find"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    run("uv", "venv", "-q", "--python", python, venv, cwd=venv.parent)
    py = venv_python(venv)
    pyproject = MEMBERS[name] / "pyproject.toml"
    # uv caches a wheel from --find-links by name and version: without a refresh it
    # would install the copy of funnel-proxy 0.2.0 it saw last, not the one just built.
    refresh = [arg for member in MEMBERS for arg in ("--refresh-package", member)]
    run(
        "uv", "pip", "install", "-q", "--python", py, "--find-links", wheels, *refresh,
        wheel_path(wheels, name), "--group", f"{pyproject}:test",
        cwd=venv.parent,
    )  # fmt: skip
    same_as_built(py, wheels)
    module = name.replace("-", "_")
    expected = version(name)
    probe = (
        f"import importlib.metadata as m, sys, {module} as pkg; "
        "where = pkg.__file__; "
        "assert where.startswith(sys.prefix), f'imported from {where}, not the venv'; "
        f"assert pkg.__version__ == m.version('{name}') == '{expected}', pkg.__version__; "
        f"print('release-check: {name}', pkg.__version__, 'from', where)"
    )
    run(py, "-c", probe, cwd=venv.parent)
    return py


def same_as_built(py: Path, wheels: Path) -> None:
    """Every funnel package in the venv that has a wheel in ``wheels`` is that wheel's copy."""
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for member in MEMBERS:
        wheel = wheel_path(wheels, member)
        if not wheel.is_file() or not list(
            Path(site).glob(f"{member.replace('-', '_')}-*.dist-info")
        ):
            continue
        with zipfile.ZipFile(wheel) as archive:
            record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
            record = archive.read(record_name).decode()
        for line in record.splitlines():
            path, digest, _ = line.rsplit(",", 2)
            if not path.endswith(".py") or not digest.startswith("sha256="):
                continue
            data = (Path(site) / path).read_bytes()
            actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if actual != digest.removeprefix("sha256="):
                print(
                    f"release-check: {path} in the venv is not the one in {wheel.name}",
                    file=sys.stderr,
                )
                sys.exit(1)
    print(f"release-check: the installed funnel packages are the wheels of {wheels}")


def test(name: str, py: Path, venv: Path) -> None:
    """Run the member's own tests against the installed wheel."""
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    tests = MEMBERS[name] / "tests"
    command: list[str | os.PathLike[str]] = [
        py,
        "-m",
        "pytest",
        tests,
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    # As `make test`: inside a private D-Bus session with an unlocked gnome-keyring when
    # one can be started, so the keyring tests meet a real Secret Service.
    run("bash", REPO / "tools" / "with-keyring.sh", *command, env=env)
    if name == "funnel-server":
        run(
            py,
            REPO / "tools" / "release" / "stdio_smoke.py",
            venv / "bin" / "funnel-server",
            env=env,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the release check; returns the exit code."""
    parser = argparse.ArgumentParser(prog="release-check", description=__doc__.split("\n", 1)[0])
    parser.add_argument("package", choices=sorted(MEMBERS))
    parser.add_argument(
        "--wheels", type=Path, default=REPO / "dist", help="wheel directory (default dist/)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep wheels already built for the current versions"
    )
    parser.add_argument(
        "--siblings-from-index",
        action="store_true",
        help="build only PACKAGE; the funnel packages it needs come from PyPI (release workflow)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the virtual environment (its path is printed)"
    )
    args = parser.parse_args(argv)
    wheels: Path = args.wheels.resolve()
    wheels.mkdir(parents=True, exist_ok=True)
    build(args.package, wheels, reuse=args.reuse, alone=args.siblings_from_index)
    work = Path(tempfile.mkdtemp(prefix=f"release-check-{args.package}-"))
    try:
        venv = work / "venv"
        py = install(args.package, wheels, venv)
        test(args.package, py, venv)
    finally:
        if args.keep:
            print(f"release-check: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"release-check: {args.package} {version(args.package)} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
