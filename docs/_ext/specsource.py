"""Read the project's source for the generated docs: definitions, their text and references.

The docs must be generated from the live definitions, and some of what they need is not a
runtime attribute: the string literal under a dataclass field or an enum member, the order in
which ``classify`` checks the handoff reasons, which gateway function calls which model
function. This module gets those from the source with :mod:`ast`; nothing here imports Sphinx.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
"""The repository root (docs/_ext/ is two levels below it)."""


@dataclass(frozen=True, slots=True)
class Definition:
    """One module, class, function, method or module-level name found in the source."""

    module: str
    """The dotted module the definition is in."""
    qualname: str
    """Dotted import path, e.g. ``spec.handoff.create_tcb`` or
    ``reference.gateway.normalpath.NormalPath.take_over``."""
    kind: str
    """``module``, ``class``, ``function``, ``method`` or ``data``."""
    path: Path
    """Source file, relative to the repository root."""
    line: int
    text: str
    """What a citation is searched in: the docstring of a module; the docstring and the field
    definitions of a class (its methods are definitions of their own); the whole source of a
    function; the assignment and its docstring for a module-level name."""
    refs: frozenset[str] = field(default=frozenset())
    """Fully qualified names its code refers to (through its module's imports and local
    names)."""
    mentions: frozenset[str] = field(default=frozenset())
    """Dotted ``spec.x.y`` / ``reference.x.y`` names written in its text (docstrings,
    comments) that its code does not refer to."""
    model_attrs: tuple[str, ...] = ()
    """Attributes read from a variable called ``model`` (what a proof asks of the model)."""

    @property
    def short(self) -> str:
        """The name without the package prefix: ``handoff.create_tcb``."""
        for prefix in ("reference.gateway.", "spec.proofs.", "spec."):
            if self.qualname.startswith(prefix):
                return self.qualname[len(prefix):]
        return self.qualname

    @property
    def location(self) -> str:
        return f"{self.path.as_posix()}:{self.line}"


# --- attribute docstrings -------------------------------------------------------------------


def assigned_name(node: ast.stmt) -> str | None:
    """The single plain name an assignment statement binds, if that is what it does."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def string_literal(node: ast.stmt | None) -> str | None:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str):
        return inspect.cleandoc(node.value.value)
    return None


def attribute_docs(body: list[ast.stmt]) -> dict[str, str]:
    """``name -> docstring`` for every assignment in ``body`` followed by a string literal
    (the convention Sphinx also reads; Python keeps no trace of these strings at run time)."""
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        name = assigned_name(stmt)
        doc = string_literal(nxt)
        if name is not None and doc is not None:
            docs[name] = doc
    return docs


@dataclass(frozen=True, slots=True)
class FieldSource:
    """One annotated field of a class, as written."""

    name: str
    annotation: str
    default: str | None
    doc: str


@functools.cache
def parse_module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_path(module: ModuleType) -> Path:
    if module.__file__ is None:
        raise ValueError(f"{module.__name__} has no source file")
    return Path(module.__file__).resolve()


def class_node(module: ModuleType, name: str) -> ast.ClassDef:
    for node in parse_module(module_path(module)).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(f"class {name} not found in {module.__name__}")


def function_node(module: ModuleType, name: str) -> ast.FunctionDef:
    for node in parse_module(module_path(module)).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(f"function {name} not found in {module.__name__}")


def _default_text(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "field":
        for kw in node.keywords:
            if kw.arg == "default":
                return ast.unparse(kw.value)
            if kw.arg == "default_factory":
                fac = kw.value
                if isinstance(fac, ast.Name):
                    return f"{fac.id}()"
                return f"({ast.unparse(fac)})()"
        return None
    return ast.unparse(node)


def class_fields(module: ModuleType, name: str) -> list[FieldSource]:
    """The annotated fields of a (data)class, in order, with type, default and docstring."""
    node = class_node(module, name)
    docs = attribute_docs(node.body)
    out = []
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            out.append(FieldSource(stmt.target.id, ast.unparse(stmt.annotation),
                                   _default_text(stmt.value), docs.get(stmt.target.id, "")))
    return out


def member_docs(module: ModuleType, name: str) -> dict[str, str]:
    """Docstrings of the members of an enum (or any class-level assignments)."""
    return attribute_docs(class_node(module, name).body)


def module_attribute_docs(module: ModuleType) -> dict[str, str]:
    return attribute_docs(parse_module(module_path(module)).body)


def parse_module_docstring(module: ModuleType) -> str:
    return ast.get_docstring(parse_module(module_path(module))) or ""


def class_docstring(module: ModuleType, name: str) -> str:
    return ast.get_docstring(class_node(module, name)) or ""


def attribute_order(func: ast.AST, owner: str) -> list[str]:
    """Names of ``owner.X`` attributes in the order they occur in ``func``'s source."""
    found = [(n.lineno, n.col_offset, n.attr) for n in ast.walk(func)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id == owner]
    return list(dict.fromkeys(attr for _, _, attr in sorted(found)))


# --- definitions and what they refer to -------------------------------------------------------


_DOTTED_IN_TEXT = re.compile(r"\b((?:spec|reference)(?:\.[A-Za-z_]\w*)+)")


class _Refs(ast.NodeVisitor):
    """Collect resolved dotted names and ``model.X`` reads inside one node."""

    def __init__(self, imports: dict[str, str], local: dict[str, str]) -> None:
        self.imports = imports
        self.local = local
        self.refs: set[str] = set()
        self.model_attrs: list[str] = []

    def _resolve(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.imports.get(node.id) or self.local.get(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "model":
            self.model_attrs.append(node.attr)
        full = self._resolve(node)
        if full is not None:
            # every prefix, so ``Owner.NORMAL_PATH`` also refers to ``Owner``
            bits = full.split(".")
            for i in range(2, len(bits) + 1):
                self.refs.add(".".join(bits[:i]))
            return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        full = self.imports.get(node.id) or self.local.get(node.id)
        if full is not None:
            self.refs.add(full)


def _imports(tree: ast.Module, module: str) -> dict[str, str]:
    out: dict[str, str] = {}
    package = module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    out[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join([*up, base]) if base else ".".join(up)
            for alias in node.names:
                out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or ""


def scan_file(path: Path, root: Path = REPO) -> list[Definition]:
    """Every definition in one source file, in source order."""
    rel = path.resolve().relative_to(root)
    module = ".".join(rel.with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    source = path.read_text(encoding="utf-8")
    tree = parse_module(path.resolve())
    imports = _imports(tree, module)
    local: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            local[node.name] = f"{module}.{node.name}"
        elif (name := assigned_name(node)) is not None:
            local[name] = f"{module}.{name}"

    def make(qual: str, kind: str, node: ast.AST, text: str,
             parts: Iterable[ast.AST]) -> Definition:
        v = _Refs(imports, local)
        for p in parts:
            v.visit(p)
        refs = v.refs - {qual}
        mentions = set(_DOTTED_IN_TEXT.findall(text)) - refs - {qual}
        return Definition(module, qual, kind, rel, getattr(node, "lineno", 1), text,
                          frozenset(refs), frozenset(mentions),
                          tuple(dict.fromkeys(v.model_attrs)))

    defs = [make(module, "module", tree, ast.get_docstring(tree) or "", ())]
    mod_docs = attribute_docs(tree.body)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defs.append(make(f"{module}.{node.name}", "function", node,
                             _segment(source, node), [node]))
        elif isinstance(node, ast.ClassDef):
            own = [s for s in node.body
                   if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)]
            text = "\n".join(_segment(source, s) for s in own)
            defs.append(make(f"{module}.{node.name}", "class", node, text,
                             [*node.bases, *node.decorator_list, *own]))
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    defs.append(make(f"{module}.{node.name}.{sub.name}", "method", sub,
                                     _segment(source, sub), [sub]))
        elif (name := assigned_name(node)) is not None:
            text = _segment(source, node)
            if name in mod_docs:
                text += "\n" + mod_docs[name]
            defs.append(make(f"{module}.{name}", "data", node, text, [node]))
    return defs


def scan_tree(directory: Path, root: Path = REPO, skip: Iterable[str] = ()) -> list[Definition]:
    """Every definition under ``directory`` (recursively), files in sorted order; ``skip``
    holds dotted module prefixes to leave out."""
    skipped = tuple(skip)
    out: list[Definition] = []
    for path in sorted(directory.rglob("*.py")):
        defs = scan_file(path, root)
        if defs and defs[0].qualname.startswith(skipped):
            continue
        out += defs
    return out


def reachable(defs: dict[str, Definition], start: str) -> Iterator[Definition]:
    """``start`` and every definition of the same module it refers to, transitively (a proof
    function and the helpers it calls)."""
    module = start.rpartition(".")[0]
    seen: set[str] = set()
    todo = [start]
    while todo:
        q = todo.pop()
        if q in seen or q not in defs:
            continue
        seen.add(q)
        d = defs[q]
        yield d
        todo += [r for r in d.refs if r.rpartition(".")[0] == module and r not in seen]
