"""API reference pages generated from each public module's ``__all__``, and a coverage check.

The public modules are ``dropout_lab`` and every submodule whose name has no leading
underscore (``ops`` is the private home of the functions that ``dropout_lab`` re-exports).
A module's public names are its ``__all__``; a module without one contributes the names
it defines itself (no leading underscore). On ``builder-inited`` one page per module is
written to ``api/generated/`` (git-ignored); when the build is read, every public name
must be a documented Python object with a docstring of its own, or the build warns
(an error under ``-W``), as optax's coverage check does.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
from typing import Any

PACKAGE = "dropout_lab"
REEXPORTED = frozenset({"ops"})  # families re-exported by the package itself
GENERATED = pathlib.Path("api") / "generated"


def public_modules() -> list[str]:
    """``dropout_lab`` and its public submodules, in alphabetical order."""
    package = importlib.import_module(PACKAGE)
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_") and info.name not in REEXPORTED
    )
    return [PACKAGE] + [f"{PACKAGE}.{name}" for name in names]


def public_names(modname: str) -> list[str]:
    """The module's ``__all__``, or the public names it defines when it has none."""
    module = importlib.import_module(modname)
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return list(declared)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and getattr(obj, "__module__", None) == modname
    ]


def _directive(modname: str, name: str) -> str:
    """The autodoc directive that documents ``modname.name``."""
    obj = getattr(importlib.import_module(modname), name)
    if inspect.isclass(obj) and issubclass(obj, tuple):  # a NamedTuple: fields in Attributes
        return f".. autoclass:: {name}\n   :no-members:\n"
    if inspect.isclass(obj):
        members = ", ".join(_methods(obj))
        return (
            f".. autoclass:: {name}\n   :members: {members}\n"
            if members
            else (f".. autoclass:: {name}\n   :no-members:\n")
        )
    if callable(obj):
        return f".. autofunction:: {name}\n"
    return f".. autodata:: {name}\n"


def _methods(cls: type) -> list[str]:
    """Documented methods and properties a class defines itself, ``__call__`` included.

    Fields are left to the class docstring's ``Attributes:`` section (Flax modules are
    dataclasses, whose fields autodoc would document a second time).
    """
    names = []
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        function = getattr(member, "fget", member)  # a property (Flax wraps them)
        own = str(getattr(function, "__qualname__", "")).startswith(f"{cls.__qualname__}.")
        if own and inspect.getdoc(function):
            names.append(name)
    return names


def page(modname: str) -> str:
    """The Markdown source of one module's API page."""
    names = public_names(modname)
    summary = "".join(f"   {name}\n" for name in names)
    body = "\n".join(_directive(modname, name) for name in names)
    return (
        f"# `{modname}`\n\n"
        "```{eval-rst}\n"
        f".. automodule:: {modname}\n   :no-members:\n\n"
        f".. currentmodule:: {modname}\n\n"
        f".. autosummary::\n   :nosignatures:\n\n{summary}\n"
        f"{body}"
        "```\n"
    )


def undocumented(documented: set[str]) -> list[str]:
    """Public names that are not documented objects or lack a docstring of their own."""
    missing = []
    top = set(public_names(PACKAGE))
    for sub in sorted(REEXPORTED):
        names = public_names(f"{PACKAGE}.{sub}")
        missing += [f"{PACKAGE}.{sub}.{n} (not re-exported)" for n in names if n not in top]
    for modname in public_modules():
        module = importlib.import_module(modname)
        for name in public_names(modname):
            full = f"{modname}.{name}"
            if full not in documented:
                missing.append(f"{full} (not in the API reference)")
            elif not _own_docstring(getattr(module, name, None), name):
                missing.append(f"{full} (no docstring)")
    return missing


def _own_docstring(obj: Any, name: str) -> bool:
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and doc.startswith(f"{name}("):  # NamedTuple's generated one
        return False
    return bool(doc.strip())


def _write_pages(app: Any) -> None:
    folder = pathlib.Path(app.srcdir) / GENERATED
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{modname}.md": page(modname) for modname in public_modules()}
    for stale in folder.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    for filename, text in wanted.items():
        path = folder / filename
        if not path.exists() or path.read_text() != text:  # unchanged pages stay cached
            path.write_text(text)


def _check_coverage(app: Any, env: Any) -> None:
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    for problem in undocumented(documented):
        logging.getLogger(__name__).warning(
            "undocumented public name: %s", problem, type="apiref", subtype="coverage"
        )


def setup(app: Any) -> dict[str, Any]:
    """Registers the page generator and the coverage check."""
    app.connect("builder-inited", _write_pages)
    app.connect("env-check-consistency", _check_coverage)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
