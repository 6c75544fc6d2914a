"""Case devices: what each speed device on the CGI scan path and in the API list buys, measured by taking it out.

The CGI path avoids some standard modules by hand (records.py for collections.namedtuple, hosting's stand-in
functools while _sqlite3 loads, _thread for threading, _sqlite3 for the sqlite3 package, _blake2 for hashlib,
a hand-made TYPE_CHECKING for typing's), and the API list formats its timestamps from tables. Issue 18 keeps
each only where it holds a target (a CGI scan ≤ 30 ms; the list ≤ 2× json.dumps) or buys more than 10 % of its
case. Here every device is taken out of a copy of the project, one at a time and then all together, by
replacing the lines it stands on; a replacement that no longer finds its lines stops the case, so it cannot
go on measuring a device that was changed or removed.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .context import Bench, Row, met, ratio
from .load import BenchError, alternate, median, time_call
from .local_cases import (
    CALLGRIND,
    PROJECT_ROOT,
    cgi_environ,
    cgi_python,
    compile_modules,
    copy_of_instance,
    count_instructions,
    time_cgi,
)

KEEP_ABOVE = 1.10  # a device stays when taking it out makes its case more than 10 % slower
CGI_TARGET_MS = 30
LIST_CODES = 10_000
LIST_BASE_URL = "https://qr.example.com"
TYPE_CHECKING_MODULES = ("qrtrack/__init__.py", "qrtrack/config.py", "qrtrack/errors.py", "qrtrack/geo.py",
                         "qrtrack/useragent.py", "qrtrack/scans.py", "qrtrack/web/fastpath.py",
                         "qrtrack/store/sqlite_scans.py", "qrtrack/store/client_info.py")
THREAD_MODULES = ("qrtrack/geo.py", "qrtrack/useragent.py", "qrtrack/store/sqlite_scans.py")
PLAIN_RECORDS = '''from collections import namedtuple


def record(typename, field_names, *, defaults=()):
    return namedtuple(typename, field_names, defaults=defaults or None)
'''


def _replace(tree: Path, name: str, old: str, new: str, *, every: bool = False) -> None:
    path = tree / name
    text = path.read_text()
    if old not in text:
        raise BenchError(f"case devices: {name} no longer has {old!r}; update bench/devices_case.py")
    path.write_text(text.replace(old, new) if every else text.replace(old, new, 1))


def _line_starting(tree: Path, name: str, start: str) -> str:
    for line in (tree / name).read_text().splitlines(keepends=True):
        if line.startswith(start):
            return line
    raise BenchError(f"case devices: {name} has no line starting {start!r}; update bench/devices_case.py")


def without_type_checking(tree: Path) -> None:
    for name in TYPE_CHECKING_MODULES:
        hand_made = _line_starting(tree, name, "TYPE_CHECKING = False")
        _replace(tree, name, hand_made, "from typing import TYPE_CHECKING\n")


def without_thread(tree: Path) -> None:
    for name in THREAD_MODULES:
        _replace(tree, name, _line_starting(tree, name, "import _thread"), "import threading\n")
        text = (tree / name).read_text()
        (tree / name).write_text(text.replace("_thread.allocate_lock()", "threading.Lock()")
                                 .replace("_thread._local()", "threading.local()"))


def without_sqlite3_module(tree: Path) -> None:
    path = tree / "qrtrack" / "store" / "sqlite_scans.py"
    lean_import = re.compile(r"try:[^\n]*\n    import _sqlite3 as sqlite3\n"
                             r"except ImportError:[^\n]*\n    import sqlite3\n")
    text, found = lean_import.subn("import sqlite3\n", path.read_text())
    if found != 1:
        raise BenchError("case devices: qrtrack/store/sqlite_scans.py no longer imports _sqlite3 as sqlite3 in a try; "
                         "update bench/devices_case.py")
    path.write_text(text)


def without_functools_stand_in(tree: Path) -> None:
    _replace(tree, "app.cgi", "hosting.import_sqlite_without_functools()\n", "")


def without_records(tree: Path) -> None:
    if "def record(" not in (tree / "qrtrack" / "records.py").read_text():
        raise BenchError("case devices: qrtrack/records.py no longer defines record(); update bench/devices_case.py")
    (tree / "qrtrack" / "records.py").write_text(PLAIN_RECORDS)


def without_blake2(tree: Path) -> None:
    _replace(tree, "qrtrack/scans.py", _line_starting(tree, "qrtrack/scans.py", "    from _blake2 import blake2b"),
             "    from hashlib import blake2b\n")


DEVICES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "type-checking": ("TYPE_CHECKING = False by hand, not typing's", without_type_checking),
    "thread": ("_thread, not threading", without_thread),
    "sqlite3": ("_sqlite3, not the sqlite3 package", without_sqlite3_module),
    "functools": ("hosting's stand-in functools while _sqlite3 loads", without_functools_stand_in),
    "records": ("records.py, not collections.namedtuple", without_records),
    "blake2": ("_blake2, not hashlib", without_blake2),
}


def _variant_tree(bench: Bench, name: str, removals: list[Callable[[Path], None]]) -> Path:
    tree = bench.run_dir / "devices" / name
    tree.mkdir(parents=True)
    for entry in ("app.cgi", "app.py", "hosting.py"):
        shutil.copy2(PROJECT_ROOT / entry, tree / entry)
    shutil.copytree(PROJECT_ROOT / "qrtrack", tree / "qrtrack", ignore=shutil.ignore_patterns("__pycache__"))
    for remove in removals:
        remove(tree)
    return tree


def measure_devices(bench: Bench) -> list[Row]:
    return _cgi_device_rows(bench) + _list_timestamp_rows(bench)


def _cgi_device_rows(bench: Bench) -> list[Row]:
    host = cgi_python()
    instance = copy_of_instance(bench, "devices")
    environ = {**cgi_environ(bench, f"/p/{bench.data.scan_slug}", instance=instance), **host.environ}
    variants = {"shipped": [], **{name: [remove] for name, (_, remove) in DEVICES.items()},
                "none": [remove for _, remove in DEVICES.values()]}
    trees = {name: _variant_tree(bench, name, removals) for name, removals in variants.items()}
    for tree in trees.values():
        compile_modules(host.python, tree)
    commands = {name: [host.python, "-S", str(tree / "app.cgi")] for name, tree in trees.items()}
    rounds, warm_up = (1, 1) if bench.quick else (21, 1)
    samples = alternate(warm_up + rounds, {
        name: (lambda command=command: time_cgi(command, environ, expect=b"Status: 302"))
        for name, command in commands.items()})
    wall = {name: median([sample[0] for sample in runs[warm_up:]]) for name, runs in samples.items()}
    instructions = {}
    if not bench.quick and shutil.which(CALLGRIND[0]):
        instructions = {name: count_instructions(command, environ) / 1e6 for name, command in commands.items()}
    shipped = f"{wall['shipped']:.1f} ms as shipped"
    rows = [_device_row(f"CGI scan without {label}", wall[name], wall["shipped"], baseline=shipped,
                        note=f"median of {rounds}, alternating; {_instruction_note(instructions, name)}")
            for name, (label, _) in DEVICES.items()]
    everything = wall["none"]
    rows.append(Row("devices", "CGI scan without any of them", f"{everything:.1f} ms", shipped,
                    ratio(everything, wall["shipped"]), f"≤ {CGI_TARGET_MS} ms", met(everything <= CGI_TARGET_MS),
                    f"median of {rounds}, alternating; {_instruction_note(instructions, 'none')}"))
    return rows


def _device_row(measure: str, without: float, shipped: float, *, baseline: str, note: str) -> Row:
    """met: taking the device out makes its case more than KEEP_ABOVE times as long, so it earns its place."""
    return Row("devices", measure, f"{without:.1f} ms", baseline, ratio(without, shipped),
               f"> {KEEP_ABOVE:.2f}× to keep", met(without > KEEP_ABOVE * shipped), note)


def _instruction_note(instructions: dict[str, float], name: str) -> str:
    if not instructions:
        return "instructions not counted (--quick, or no valgrind)"
    return (f"{instructions[name]:.1f} M instructions against {instructions['shipped']:.1f} M shipped "
            f"(+{instructions[name] - instructions['shipped']:.1f} M)")


def _list_timestamp_rows(bench: Bench) -> list[Row]:
    """The API list's time tables against a plain per-epoch memo of isoformat_utc, in-process, on codes made at
    different times (a site's usual list) and in bulk (the bench's own data, made within seconds)."""
    from qrtrack.clock import isoformat_utc

    class PlainTimestamps(dict):
        def __missing__(self, epoch: int) -> str:
            self[epoch] = formatted = isoformat_utc(epoch)
            return formatted

    rounds = 3 if bench.quick else 15
    rows = []
    for spread, label in ((3_137, "made at different times"), (0, "made in bulk")):
        codes = _list_rows(spread)
        payload = _list_body(codes, None)
        if _list_body(codes, PlainTimestamps) != payload:
            raise BenchError("case devices: the plain timestamps give another list than the tables")
        samples = alternate(rounds, {
            "tables": lambda codes=codes: time_call(lambda: _list_body(codes, None)),
            "plain": lambda codes=codes: time_call(lambda: _list_body(codes, PlainTimestamps)),
            "dumps": lambda parsed=json.loads(payload): time_call(lambda: json.dumps(parsed))})
        plain, tables, dumps = (median(samples[name]) for name in ("plain", "tables", "dumps"))
        rows.append(_device_row(
            f"API list body of {LIST_CODES:,} codes {label}, without the time tables", plain, tables,
            baseline=f"{tables:.1f} ms with them",
            note=f"median of {rounds}, in-process; json.dumps of the same list {dumps:.1f} ms (without the tables "
                 f"{plain / dumps:.2f}× that, with them {tables / dumps:.2f}×)"))
    return rows


def _list_body(codes: list[tuple], timestamps: type | None) -> str:
    """api.code_list_json of codes, its timestamps formatted by the class given instead of IsoTimestamps."""
    from qrtrack.web import api

    shipped = api.IsoTimestamps
    api.IsoTimestamps = timestamps or shipped
    try:
        return api.code_list_json(codes, LIST_BASE_URL)
    finally:
        api.IsoTimestamps = shipped


def _list_rows(spread: int) -> list[tuple]:
    """Rows as store.codes.list_code_summaries gives them; created_at `spread` seconds apart (0: all at once)."""
    start = 1_760_000_000
    return [(f"{number:08x}-0000-4000-8000-{number:012x}", "url", f"https://example.com/products/{number}",
             number % 50, start + number * spread, None, f"Poster {number}", "active", f"Ab{number:05d}",
             start + number * spread + 60) for number in range(LIST_CODES)]
