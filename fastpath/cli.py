"""The ``fastpath`` command line: one entry point, one subcommand per job.

Adding a subcommand is one ``_add_<name>(subparsers)`` function that builds its parser and sets
``handler`` (a function from the parsed arguments to an exit status), plus one entry in
:data:`SUBCOMMANDS`. Usage problems raise :class:`CliError` and exit 2; a run that finds a
problem (e.g. a proof that does not hold) exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from spec import invariants
from spec.invariants import Invariant, ProofResult, Status

if TYPE_CHECKING:
    from spec.variants import Variant

Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction  # argparse exposes no public name for this type


class CliError(Exception):
    """A usage problem. The message is one sentence that says what to do; exit status 2."""


def _err(msg: str) -> None:
    print(f"fastpath: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- verify


@dataclass(slots=True)
class _Outcome:
    """One finished proof, with where its counterexample pcap went (if anywhere)."""

    inv: Invariant
    result: ProofResult
    pcap: Path | None = None


def _registry() -> dict[str, Invariant]:
    """Registered invariants by name, registration order; a broken import is a usage error."""
    try:
        invs = invariants.all_invariants()
    except ImportError as exc:
        raise CliError(f"the proofs in spec/proofs/ cannot be imported ({exc}); fix that "
                       f"import or rerun `bash setup.sh`") from exc
    if not invs:
        raise CliError("no invariants are registered; add proofs under spec/proofs/ first")
    return {inv.name: inv for inv in invs}


def _variants_module() -> ModuleType:
    try:
        return importlib.import_module("spec.variants")
    except ImportError as exc:
        raise CliError(f"spec.variants cannot be imported ({exc}); fix it or run without "
                       f"--variant") from exc


def _pick_variant(name: str) -> Variant:
    known: dict[str, Variant] = _variants_module().VARIANTS
    if name not in known:
        raise CliError(f"unknown variant {name!r}; use one of: {', '.join(known) or '(none)'} "
                       f"(see `fastpath verify --list`)")
    return known[name]


def _select(registry: dict[str, Invariant], only: Sequence[str] | None,
            variant: Variant | None) -> list[Invariant]:
    """``--only`` wins; else a variant's claimed breaks; else everything. Registry order."""
    if only:
        wanted, source = list(dict.fromkeys(only)), "--only"
    elif variant is not None:
        wanted, source = list(variant.breaks), f"variant {variant.name!r} (its .breaks)"
    else:
        return list(registry.values())
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise CliError(f"unknown invariant {', '.join(map(repr, unknown))} in {source}; "
                       f"use one of: {', '.join(registry)}")
    return [inv for name, inv in registry.items() if name in wanted]


def _write_pcap(result: ProofResult, pcap_dir: Path) -> Path | None:
    if result.trace is None:
        return None
    path = pcap_dir / f"{result.name}.pcap"
    try:
        result.trace.write_pcap(path)
    except OSError as exc:
        raise CliError(f"cannot write {path} ({exc.strerror or exc}); pass a writable "
                       f"--pcap-dir") from exc
    return path


def _table(outcomes: Sequence[_Outcome]) -> str:
    """Fixed columns with the guarantee wrapped, so long sentences stay readable in a terminal."""
    name_w = max([len("invariant"), *(len(o.inv.name) for o in outcomes)])
    res_w = len(Status.COUNTEREXAMPLE.value)
    sec_w = 8
    width = max(100, shutil.get_terminal_size((100, 24)).columns)
    guar_w = max(30, width - name_w - res_w - sec_w - 6)
    row = f"{{:<{name_w}}}  {{:<{guar_w}}}  {{:<{res_w}}}  {{:>{sec_w}}}"
    lines = [row.format("invariant", "guarantees", "result", "seconds"),
             row.format("-" * name_w, "-" * guar_w, "-" * res_w, "-" * sec_w)]
    for o in outcomes:
        wrapped = textwrap.wrap(o.inv.guarantees, guar_w) or [""]
        lines.append(row.format(o.inv.name, wrapped[0], o.result.status.value,
                                f"{o.result.seconds:.2f}"))
        lines += [row.format("", more, "", "").rstrip() for more in wrapped[1:]]
    counts = {s: sum(o.result.status is s for o in outcomes) for s in Status}
    total = sum(o.result.seconds for o in outcomes)
    lines.append(f"total: {len(outcomes)} proof{'' if len(outcomes) == 1 else 's'}, "
                 + ", ".join(f"{n} {s.value}" for s, n in counts.items())
                 + f", {total:.2f} s")
    return "\n".join(line.rstrip() for line in lines)


def _failures(outcomes: Sequence[_Outcome], variant: Variant | None) -> str:
    """Why each non-proved result failed: solver detail, two-leg trace, pcap location."""
    on = f" (variant {variant.name})" if variant is not None else ""
    blocks = []
    for o in outcomes:
        res = o.result
        if res.status is Status.PROVED:
            continue
        lines = [f"== {res.status.value}: {res.name}{on} ==", f"guarantees: {o.inv.guarantees}",
                 f"solver: {res.detail or '(no detail)'}"]
        if res.trace is not None:
            lines += ["trace:", res.trace.render().rstrip("\n")]
        if o.pcap is not None:
            lines.append(f"pcap: {o.pcap}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _variant_summary(outcomes: Sequence[_Outcome], variant: Variant) -> str:
    """Say whether the variant broke what it claims to, since exit 1 is the expected result."""
    claimed = [o for o in outcomes if o.inv.name in variant.breaks]
    held = [o.inv.name for o in claimed if o.result.status is Status.PROVED]
    line = (f"variant {variant.name}: {len(claimed) - len(held)} of {len(claimed)} claimed "
            f"invariants broken")
    if held:
        return line + (f"; still proved: {', '.join(held)} (the proof is too weak or the "
                       f"variant does not break it)")
    return line + " as expected (exit status 1 is the expected result)"


def _list(as_json: bool) -> int:
    registry = _registry()
    try:
        variants: dict[str, Variant] = _variants_module().VARIANTS
        missing = ""
    except CliError as exc:
        variants, missing = {}, str(exc)
    if as_json:
        print(json.dumps({
            "invariants": [{"name": i.name, "guarantees": i.guarantees, "serves": list(i.serves),
                            "broken_by": list(i.broken_by)} for i in registry.values()],
            "variants": [{"name": v.name, "description": v.description,
                          "breaks": list(v.breaks)} for v in variants.values()],
        }, indent=2))
        return 0
    print(f"invariants ({len(registry)}):")
    for inv in registry.values():
        print(f"  {inv.name}  [{', '.join(inv.serves)}]")
        print(textwrap.fill(inv.guarantees, 96, initial_indent=" " * 6,
                            subsequent_indent=" " * 6))
    print(f"variants ({len(variants)}):" if not missing else f"variants: none ({missing})")
    for var in variants.values():
        print(f"  {var.name}  breaks: {', '.join(var.breaks) or '(nothing)'}")
        print(textwrap.fill(var.description, 96, initial_indent=" " * 6,
                            subsequent_indent=" " * 6))
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.json)
    registry = _registry()
    variant = _pick_variant(args.variant) if args.variant is not None else None
    selected = _select(registry, args.only, variant)
    if args.pcap_dir is not None:
        try:
            args.pcap_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create {args.pcap_dir} ({exc.strerror or exc}); pass a "
                           f"writable --pcap-dir") from exc
    model = variant.model if variant is not None else None
    outcomes: list[_Outcome] = []
    for i, inv in enumerate(selected, 1):
        try:
            result = invariants.run(inv, model)
        except ImportError as exc:
            raise CliError(f"the model cannot be imported ({exc}); fix spec/ or rerun "
                           f"`bash setup.sh`") from exc
        outcome = _Outcome(inv, result)
        if args.pcap_dir is not None:
            outcome.pcap = _write_pcap(result, args.pcap_dir)
        outcomes.append(outcome)
        if not args.json:
            print(f"[{i}/{len(selected)}] {inv.name} ... {result.status.value} "
                  f"({result.seconds:.2f} s)", file=sys.stderr, flush=True)

    if args.json:
        rows = []
        for o in outcomes:
            row = {**o.result.as_json(), "guarantees": o.inv.guarantees,
                   "serves": list(o.inv.serves)}
            if variant is not None:
                row["variant"] = variant.name
            if o.pcap is not None:
                row["pcap"] = str(o.pcap)
            rows.append(row)
        print(json.dumps(rows, indent=2))
    else:
        print(_table(outcomes))
        if variant is not None:
            print(_variant_summary(outcomes, variant))
        failures = _failures(outcomes, variant)
        if failures:
            print("\n" + failures)
    return 0 if all(o.result.status is Status.PROVED for o in outcomes) else 1


def _add_verify(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify", help="prove the spec's invariants with Z3",
        description="Prove every registered invariant (or some) against the real model or a "
                    "deliberately broken variant. Exit 0 if all are proved, 1 otherwise, 2 on "
                    "a usage error.")
    p.add_argument("--json", action="store_true",
                   help="print only a JSON list of results on stdout (no progress)")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                   help="prove only these invariants (repeatable)")
    p.add_argument("--variant", metavar="NAME",
                   help="prove against this broken variant of the model; by default only the "
                        "invariants it claims to break, so exit 1 is expected")
    p.add_argument("--pcap-dir", type=Path, metavar="DIR",
                   help="write each counterexample's two-leg trace to DIR/<invariant>.pcap")
    p.add_argument("--list", action="store_true",
                   help="list invariants and variants without proving anything")
    p.set_defaults(handler=_verify)


# --------------------------------------------------------------------------- entry point

def _add_simulate(sub: Subparsers) -> None:
    from fastpath import simulate

    simulate.add(sub)


def _add_lab(sub: Subparsers) -> None:
    from fastpath import lab

    lab.add(sub)


def _add_docs(sub: Subparsers) -> None:
    from fastpath import docs

    docs.add(sub)


def _add_gateway(sub: Subparsers) -> None:
    from fastpath import gateway_cmd

    gateway_cmd.add(sub)


def _add_demo(sub: Subparsers) -> None:
    from fastpath import demo

    demo.add(sub)


def _add_conformance(sub: Subparsers) -> None:
    from fastpath import conformance_cmd

    conformance_cmd.add(sub)


SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _add_verify, _add_simulate, _add_lab, _add_docs, _add_gateway, _add_demo, _add_conformance)
"""Every subcommand's parser builder, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpath",
        description="Formal spec, reference gateway and conformance suite for fast-path/"
                    "normal-path TCP service gateways.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (so tests need not catch SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        _err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    # Run the package's copy of this module, not __main__'s, so that the CliError the
    # subcommand modules import is the class main() catches (python -m fastpath.cli).
    from fastpath.cli import main as _main

    raise SystemExit(_main())
