"""Every code block and command of the README and the docs, run or checked.

- ``python`` blocks of one Markdown file run in order, in one namespace, from the
  repository root. A block that must not run (a long experiment, a fragment) is marked
  by the line ``<!-- test: skip -->`` just before its opening fence.
- ``bash``/``sh``/``shell``/``console`` blocks: each command is checked, not run.
  ``make`` targets must exist in the Makefile; scripts, configs and other paths must
  exist (outputs under ``runs/``, ``dist/`` and ``benchmarks/results/`` excepted);
  ``pip install`` extras must exist in ``pyproject.toml``; ``python -m`` modules must be
  importable. Commands spell the interpreter ``python`` (the activated ``.venv``, the
  one way to run things said in the README), never ``python3`` or ``.venv/bin/python``.
- ``yaml`` blocks must parse. Relative links of the README must point at files.
- The API reference covers every public name with a docstring (``docs/_ext/apiref``),
  and the generated tables equal what ``docs/generate.py`` makes of the committed JSON.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import types
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(path: pathlib.Path) -> types.ModuleType:
    """Imports a file of docs/ as a module, without putting docs/ on sys.path."""
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apiref = _load(DOCS / "_ext" / "apiref.py")
generate = _load(DOCS / "generate.py")

SKIP_MARK = "<!-- test: skip -->"
SHELL = {"bash", "sh", "shell", "console"}
OUTPUTS = ("runs/", "dist/", "benchmarks/results/", "docs/_build/")
EXCLUDED = ("_build", "api/generated")


class Block(NamedTuple):
    """One fenced code block: its language, its first line number, its text, skipped."""

    lang: str
    line: int
    text: str
    skip: bool


def markdown_files() -> list[pathlib.Path]:
    docs = [
        p for p in sorted(DOCS.rglob("*.md")) if not str(p.relative_to(DOCS)).startswith(EXCLUDED)
    ]
    return [ROOT / "README.md", *docs]


def blocks(path: pathlib.Path) -> list[Block]:
    """The fenced blocks of a Markdown file (nested fences stay inside their block)."""
    out, lines = [], path.read_text().splitlines()
    fence, start, lang, body, skip = None, 0, "", [], False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"^(`{3,}|~{3,})\s*(\{[\w-]+\})?\s*([\w+-]*)", stripped)
            if match:
                fence, start, body = match.group(1), number, []
                lang = (
                    match.group(3).lower()
                    if match.group(2) in (None, "{code-block}", "{code}")
                    else ""
                )
                previous = [s.strip() for s in lines[: number - 1] if s.strip()]
                skip = bool(previous) and previous[-1] == SKIP_MARK
        elif stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            out.append(Block(lang, start, textwrap.dedent("\n".join(body)), skip))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{path}:{start}: unclosed code fence"
    return out


def _ids(paths: list[pathlib.Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


FILES = markdown_files()


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_python_blocks_run(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    # A real module, so that classes defined in the blocks (dataclasses) can be resolved.
    module = types.ModuleType("docs_" + re.sub(r"\W", "_", str(path.relative_to(ROOT))))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks(path):
        if block.lang in ("python", "py") and not block.skip:
            code = compile(block.text, f"{path.relative_to(ROOT)}:{block.line}", "exec")
            exec(code, module.__dict__)


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_shell_commands_refer_to_what_exists(path: pathlib.Path) -> None:
    problems = []
    for block in blocks(path):
        if block.lang in SHELL:
            for line, command in commands(block):
                problems += [
                    f"{path.relative_to(ROOT)}:{line}: {p}" for p in check_command(command)
                ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_yaml_blocks_parse(path: pathlib.Path) -> None:
    yaml = pytest.importorskip("yaml")
    for block in blocks(path):
        if block.lang in ("yaml", "yml"):
            yaml.safe_load(block.text)


def console_errors(path: pathlib.Path) -> list[tuple[str, str]]:
    """``(command, documented output)`` of the console examples that end in ``error:``."""
    out = []
    for block in blocks(path):
        if block.lang == "console":
            for chunk in re.split(r"^\$ ", block.text, flags=re.MULTILINE)[1:]:
                command, _, output = chunk.partition("\n")
                if output.startswith("error:"):
                    out.append((command, output.strip()))
    return out


ERRORS = [(p, c, o) for p in FILES for c, o in console_errors(p)]


@pytest.mark.parametrize(("path", "command", "output"), ERRORS, ids=[e[1] for e in ERRORS])
def test_console_errors_are_what_the_docs_show(
    path: pathlib.Path, command: str, output: str
) -> None:
    argv = shlex.split(command)
    assert argv[0] == "python", command
    result = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert (result.stdout + result.stderr).strip() == output


def commands(block: Block) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` of every command of a shell block (``&&``, ``;``, ``|`` split)."""
    out = []
    lines = block.text.replace("\\\n", " ").splitlines()
    for offset, line in enumerate(lines, 1):
        if block.lang == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", ";", "|", "||"):
                if current:
                    out.append((block.line + offset, current))
                current = []
            else:
                current.append(word)
    return out


def check_command(argv: list[str]) -> list[str]:
    """What is wrong with one command (empty when it refers only to what exists)."""
    while argv and re.match(r"^[A-Z_]+=", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    if argv and argv[0] == "time":
        argv = argv[1:]
    if not argv:
        return []
    program, args = argv[0], argv[1:]
    if program in ("python3", ".venv/bin/python") or program.endswith("/python"):
        return [f"spell the interpreter `python` (the activated .venv), not {program!r}"]
    checks = {"make": _check_make, "python": _check_python, "pip": _check_pip}
    if program in checks:
        return checks[program](args)
    if program == "source":
        return [] if args == [".venv/bin/activate"] else [f"unknown source {args}"]
    if program in ("cd", "git", "ls", "cat", "export", "open"):
        return []
    return [f"unknown command {program!r}: add it to tests/test_docs.py if it is meant"]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:", text, flags=re.MULTILINE))


def _check_make(args: list[str]) -> list[str]:
    targets = [a for a in args if not a.startswith("-") and "=" not in a]
    missing = sorted(set(targets) - _make_targets())
    return [f"make target {t!r} is not in the Makefile" for t in missing]


def _check_python(args: list[str]) -> list[str]:
    if args[:1] == ["-m"]:
        module = args[1]
        found = importlib.util.find_spec(module) is not None
        return [] if found else [f"python -m {module}: no such module"]
    if args[:1] == ["-c"]:
        return []
    return [f"no file {a}" for a in args if _looks_like_path(a) and not (ROOT / a).exists()]


def _looks_like_path(arg: str) -> bool:
    if arg.startswith("-") or "=" in arg or arg.startswith(OUTPUTS):
        return False
    return "/" in arg or arg.endswith((".py", ".yaml", ".yml", ".json", ".csv", ".npz"))


def _check_pip(args: list[str]) -> list[str]:
    extras = set(re.findall(r"^(\w+) = \[", _optional_dependencies(), flags=re.MULTILINE))
    problems = []
    for arg in args:
        for named in re.findall(r"\[([\w,]+)\]", arg):
            if arg.startswith((".", "/", "dist/")) or arg.startswith("dropout_lab"):
                problems += [
                    f"no extra {e!r} in pyproject.toml" for e in named.split(",") if e not in extras
                ]
    return problems


def _optional_dependencies() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]


def test_readme_links_point_at_files() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, missing


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_public_name_has_a_docstring() -> None:
    documented = {f"{m}.{n}" for m in apiref.public_modules() for n in apiref.public_names(m)}
    assert apiref.undocumented(documented) == []


def test_api_pages_cover_every_public_module() -> None:
    for modname in apiref.public_modules():
        text = apiref.page(modname)
        for name in apiref.public_names(modname):
            assert re.search(rf"^\.\. auto\w+:: {re.escape(name)}$", text, re.MULTILINE), name


def test_generated_tables_equal_the_generator_output() -> None:
    expected = generate.render_all(DOCS / "results")
    for relative, text in expected.items():
        path = ROOT / relative
        assert path.exists(), f"{relative} missing: run `make docs-results`"
        assert generate.current(path) == text, f"{relative} differs: run `make docs-results`"


def test_committed_figures_are_small_and_the_generated_ones_unchanged() -> None:
    listed = {name: entry["sha256"] for name, entry in generate.manifest(DOCS / "results").items()}
    for path in sorted((DOCS / "figures").glob("*.png")):
        assert path.stat().st_size <= 160_000, f"{path.name}: keep committed figures small"
    for name, digest in listed.items():  # the figure the generator wrote, not replaced
        path = DOCS / "figures" / name
        assert path.exists(), f"{name} missing: run `make docs-results`"
        assert generate.sha256(path) == digest, f"{name} changed since `make docs-results`"


def test_generator_sources_name_existing_scripts_and_configs() -> None:
    for source in generate.SOURCES:
        assert check_command(shlex.split(source.command)) == [], source.command
