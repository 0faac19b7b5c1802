"""What `import openai` loads in this process: the SDK's client, minus what our raw-stream path never uses.

`import openai` executes `openai.types`, whose generated package files re-export every one of the API's
~1,900 pydantic and TypedDict classes (about 10 MiB per worker), and imports `aiohttp` when it happens
to be installed, for an optional async transport (about 7 MiB). `llm.py` posts with `client.post(...,
stream=True)` and parses the events itself, so it needs neither. `install()` makes two changes, both
confined to the `openai` package and invisible to code that does use them:

- a package under `openai.types` whose `__init__` only re-exports names from its submodules gets each
  name from its submodule when the name is first read (`openai.types.responses.Response` still works);
- `openai.lib` (structured-output helpers) loads the same way; the two functions `openai/__init__` takes
  from it at once are stand-ins that load theirs when first called (its `_tools` imports ~50
  `openai.types.chat` modules, ~1 MiB);
- `openai._vendor.httpx_aiohttp` is not found, which the SDK handles by leaving out that transport.
"""
from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

TYPES = "openai.types"
LIB = "openai.lib"
LIB_FUNCTIONS_READ_AT_IMPORT = ("pydantic_function_tool", "pydantic_responses_function_tool")
AIOHTTP_TRANSPORT = "openai._vendor.httpx_aiohttp"


class _LeanOpenAI(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == AIOHTTP_TRANSPORT:
            raise ModuleNotFoundError(f"{name} is left out (we never use the SDK's aiohttp transport)", name=name)
        if name != TYPES and not name.startswith(TYPES + ".") and name != LIB:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.submodule_search_locations is None or spec.loader is None:
            return spec  # a plain module: loaded as usual
        spec.loader_state = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        spec = module.__spec__
        exports = _reexports(spec.origin)
        if exports is None:  # the package does more than re-export: run it as usual
            spec.loader_state.exec_module(module)
            return
        package = module.__name__

        def __getattr__(attr: str):
            submodule, original = exports.get(attr, (attr, None))  # else perhaps a submodule's name
            if attr.startswith("__") or importlib.util.find_spec(f"{package}.{submodule}") is None:
                raise AttributeError(f"module {package!r} has no attribute {attr!r}")
            value = importlib.import_module(f"{package}.{submodule}")
            if original is not None:
                value = getattr(value, original)
            setattr(module, attr, value)
            return value

        if package == LIB:
            for attr in LIB_FUNCTIONS_READ_AT_IMPORT:
                if attr in exports:
                    submodule, original = exports[attr]
                    setattr(module, attr, _loaded_when_called(f"{package}.{submodule}", original or attr))
        module.__getattr__ = __getattr__
        module.__dir__ = lambda: sorted(set(vars(module)) | set(exports))
        module.__all__ = list(exports)  # `from openai.types import *` still gets everything


def _loaded_when_called(module_name: str, name: str):
    """A function that imports `module_name` and calls its `name` with the same arguments."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module_name), name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = name
    call.__module__ = module_name
    return call


def _reexports(path: str) -> dict[str, tuple[str, str | None]] | None:
    """name -> (submodule, its name there, or None for the submodule itself) when the file has nothing but
    `from __future__ import ...` and `from .submodule import Name as Name` / `from . import submodule`."""
    with open(path, "rb") as source:
        tree = ast.parse(source.read(), path)
    exports: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if not isinstance(node, ast.ImportFrom):
            return None
        if node.module == "__future__":
            continue
        if node.level != 1:
            return None
        for alias in node.names:
            if alias.name == "*":
                return None
            exports[alias.asname or alias.name] = ((node.module, alias.name) if node.module
                                                   else (alias.name, None))
    return exports


_finder = _LeanOpenAI()


def install() -> None:
    """Before `openai` is first imported (once it is, this changes nothing)."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
