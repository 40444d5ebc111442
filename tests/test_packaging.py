"""The release: ``python -m build`` gives an sdist and a wheel of the library alone.

The wheel holds ``dropout_lab/`` only (the lab in ``experiments/`` is not shipped),
requires only the core dependencies, carries the version defined once in
``dropout_lab/__init__.py``, and imports with nothing else on the path: the library
and every public submodule load without omegaconf, orbax, matplotlib or scikit-learn.
"""

from __future__ import annotations

import email
import json
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = {"jax", "jaxlib", "flax", "optax", "chex", "numpy"}
# The extras' packages (rich is not among them: flax.linen imports it, flax requires it).
OPTIONAL = ("omegaconf", "orbax", "matplotlib", "sklearn", "mnist1d", "torch")

# Run in a process with only the installed wheel and the environment's packages on the
# path (-S: no .pth files, so the editable checkout is not importable).
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import dropout_lab
names = [m.name for m in pkgutil.iter_modules(dropout_lab.__path__) if not m.name.startswith("_")]
for name in names:
    importlib.import_module("dropout_lab." + name)
print(json.dumps({
    "file": dropout_lab.__file__,
    "version": dropout_lab.__version__,
    "submodules": names,
    "loaded": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


def _version() -> str:
    namespace: dict = {}
    for line in (ROOT / "dropout_lab" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            exec(line, namespace)
    return namespace["__version__"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return out


def _wheel(dist: pathlib.Path) -> pathlib.Path:
    (wheel,) = dist.glob("dropout_lab-*.whl")
    return wheel


def test_build_gives_an_sdist_and_a_wheel_of_the_version(dist: pathlib.Path) -> None:
    version = _version()
    assert _wheel(dist).name == f"dropout_lab-{version}-py3-none-any.whl"
    (sdist,) = dist.glob("dropout_lab-*.tar.gz")
    assert sdist.name == f"dropout_lab-{version}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "LICENSE", "README.md", "dropout_lab/__init__.py"} <= names
    assert not any(n.startswith(("docs/_build", "docs/api/generated")) for n in names)


def test_wheel_holds_the_library_only(dist: pathlib.Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"dropout_lab", f"dropout_lab-{_version()}.dist-info"}


def test_wheel_requires_only_the_core_dependencies(dist: pathlib.Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["Version"] == _version()
    required = {
        r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        for r in meta.get_all("Requires-Dist", [])
        if "extra ==" not in r
    }
    assert required == CORE
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        assert any(n.endswith("licenses/LICENSE") for n in wheel.namelist())


def test_wheel_imports_with_the_core_dependencies_only(
    dist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*install, "--target", str(target), str(_wheel(dist))], check=True, timeout=120)
    path = [str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    code = f"import sys; sys.path[:0] = {path!r}\n{IMPORT_ALL}"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(target))
    assert report["version"] == _version()
    assert {"linen", "nnx", "mc", "uncertainty", "losses", "metrics", "theory"} <= set(
        report["submodules"]
    )
    assert not set(OPTIONAL) & set(report["loaded"])


def test_the_lab_names_its_extra_when_it_is_missing(tmp_path: pathlib.Path) -> None:
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "def find_spec(name, *args):\n"
        "    return None if name == 'omegaconf' else real(name, *args)\n"
        "importlib.util.find_spec = find_spec\n"
        f"sys.path.insert(0, {str(ROOT / 'experiments')!r})\n"
        "try:\n"
        "    import lab\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "omegaconf" in result.stdout
    assert 'pip install -e ".[experiments]"' in result.stdout


def test_citation_file_is_valid() -> None:
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert {"title", "authors", "message", "license"} <= set(citation)
    assert "version" not in citation  # defined once, in dropout_lab/__init__.py
