"""Cases measured without a server: image-cold (rendering in-process) and cgi (one process per request)."""
from __future__ import annotations

import io
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.site import SYSTEM_PYTHON, can_make_venvs, deploy_venv

from .context import Bench, Row, met, ratio
from .data import app_settings, logo_png
from .load import PHONE_ADDRESS, PHONE_USER_AGENT, BenchError, alternate, median, time_call

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CGI_TIMEOUT_SECONDS = 60
SCAN_COUNT_SQL = "SELECT scan_count FROM codes WHERE id = ?"
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
"""Counts instructions for the cgi case when Debian's valgrind is installed (apt-get install -y valgrind)."""
@dataclass(frozen=True)
class CgiEntry:
    """A CGI entry a host may run: how the table names it, and the interpreter options it is run with by the
    venv's python, as the README has app.cgi's first line point at (with -S), so hosting.use_venv() does not
    re-execute."""

    label: str
    python_options: tuple[str, ...]


# The first present one is what the target is about.
CGI_ENTRIES = {"app.cgi": CgiEntry("app.cgi (the shipped CGI entry)", ("-S",)),
               "app.py": CgiEntry("python app.py (the whole app)", ())}


@dataclass(frozen=True)
class CgiPython:
    """The interpreter the cgi case runs its processes on, the environment that makes hosting.use_venv() take
    it for the app's venv, and how the table names it."""

    python: str
    environ: dict[str, str]
    name: str


def cgi_python() -> CgiPython:
    """A venv made from Debian's /usr/bin/python3 with requirements.txt, as the README's CGI guide has a host make
    (a web server's user cannot run a Python under /root, such as pyenv's) and tests/deploy uses: the CGI
    processes are timed on what a host runs (the venv is built once, and shared with the hosting case and the
    deploy tests). This bench's own interpreter where Debian's python3 cannot make venvs.

    It matters: Debian's python3 is one executable built with PGO and LTO, where a pyenv build like this
    machine's loads a shared libpython. Measured here, `python -S -c pass` took 20.9 million instructions on
    Debian's and 27.7 million on pyenv's, a CGI scan 47.3 and 60.5 million.
    """
    own = CgiPython(sys.executable, {}, f"this bench's python {platform.python_version()}")
    if not can_make_venvs():
        return own
    venv = deploy_venv()
    version = subprocess.run([venv / "bin" / "python", "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True, timeout=CGI_TIMEOUT_SECONDS).stdout.strip()
    return CgiPython(str(venv / "bin" / "python"), {"QRTRACK_VENV": str(venv)},
                     f"a venv of Debian's {SYSTEM_PYTHON} ({version}), as the README's CGI guide has hosts make")


def measure_image_cold(bench: Bench) -> list[Row]:
    import qrcode

    from qrtrack.images import qr

    logo = qr.sanitize_logo(logo_png())
    short_url = f"https://qr.example.com/p/{bench.data.image_slug}"
    rounds = 3 if bench.quick else 31
    samples = alternate(rounds + 1, {
        "ours": lambda: time_call(lambda: qr.render_png(short_url, logo=logo)),
        "qrcode": lambda: time_call(lambda: qrcode.make(short_url).save(io.BytesIO()))})
    ours, plain = median(samples["ours"][1:]), median(samples["qrcode"][1:])  # the first call warms caches
    return [Row("image-cold", "render_png with a logo, in-process", f"{ours:.1f} ms",
                f"{plain:.1f} ms qrcode.make PNG", ratio(ours, plain), "< 15 ms", met(ours < 15),
                f"{qr.DEFAULT_SIZE} px, error correction H; baseline: no logo, qrcode's defaults; "
                f"median of {rounds}")]


def measure_cgi(bench: Bench) -> list[Row]:
    """The shipped CGI entry (app.cgi, whose lean path answers scans and cached images without Flask) and
    `python app.py` (the whole app under CGIHandler), each against a minimal Flask CGI app, all in turn, on the
    interpreter a host runs (cgi_python); app.cgi also on this bench's own, for comparison."""
    # Each CGI process must be its database's only connection, as on a site that only takes CGI scans (see
    # SqliteScanStore.trim_wal): the servers of the other cases hold the bench's database open, and python
    # app.py, closing a database no one else holds, empties its WAL. So the CGI scans get a copy of the
    # instance folder, and python app.py another.
    cgi_instance, full_app_instance = (copy_of_instance(bench, name) for name in ("cgi", "app-py"))
    host = cgi_python()
    own_environ = cgi_environ(bench, f"/p/{bench.data.scan_slug}", instance=cgi_instance)
    environ = {**own_environ, **host.environ}
    image_environ = {**cgi_environ(bench, f"/img/{bench.data.image_slug}.png", instance=cgi_instance), **host.environ}
    compile_modules(host.python)
    entries = [name for name in CGI_ENTRIES if (PROJECT_ROOT / name).is_file()]
    commands = {name: [host.python, *CGI_ENTRIES[name].python_options, str(PROJECT_ROOT / name)] for name in entries}
    commands["flask"] = [host.python, str(PROJECT_ROOT / "bench" / "baseline_apps.py")]
    commands["stdlib"] = [host.python, str(PROJECT_ROOT / "bench" / "baseline_cgi_scan.py")]
    environs = {name: environ for name in commands}
    environs["app.py"] = {**cgi_environ(bench, f"/p/{bench.data.scan_slug}", instance=full_app_instance),
                          **host.environ}
    compare_own = host.python != sys.executable and "app.cgi" in commands
    if compare_own:
        commands["own"] = [sys.executable, *CGI_ENTRIES["app.cgi"].python_options, commands["app.cgi"][-1]]
        environs["own"] = own_environ
    rounds, warm_up = (1, 0) if bench.quick else (21, 1)  # a first, uncounted round fills the page cache
    databases = tuple(instance / bench.data.database.name for instance in (cgi_instance, full_app_instance))
    before = _scans_recorded(bench, databases)
    measures = {name: (lambda command=command, name=name: time_cgi(command, environs[name], expect=b"Status: 302"))
                for name, command in commands.items()}
    measures["python"] = lambda: _time_process([host.python, "-c", "pass"], environ)[:2]  # the floor
    if compare_own:
        measures["own-python"] = lambda: _time_process([sys.executable, "-c", "pass"], own_environ)[:2]
    if "app.cgi" in commands:
        time_cgi(commands["app.cgi"], image_environ, expect=b"Status: 200")  # the full app renders and caches it
        measures["image"] = lambda: time_cgi(commands["app.cgi"], image_environ, expect=b"Status: 200")
    samples = alternate(warm_up + rounds, measures)
    recorded = _scans_recorded(bench, databases) - before
    wall = {name: median([sample[0] for sample in runs[warm_up:]]) for name, runs in samples.items()}
    cpu = {name: median([sample[1] for sample in runs[warm_up:]]) for name, runs in samples.items()}
    flask, floor, stdlib = wall["flask"], wall["python"], wall["stdlib"]
    notes = f"median of {rounds}; `python -c pass` alone {floor:.1f} ms"
    scan_processes = (warm_up + rounds) * (len(entries) + 1 + compare_own)  # the entries, that scan and own
    rows = []
    for number, name in enumerate(entries):
        ours = wall[name]
        target, result = ("≤ 30 ms and ≤ 0.2×", met(ours <= 30 and ours <= 0.2 * flask)) if number == 0 else (
            "report", "report")
        interpreter = f"; every process of this case on {host.name}" if number == 0 else ""
        rows.append(Row("cgi", f"CGI scan through {CGI_ENTRIES[name].label}, process start to exit", f"{ours:.1f} ms",
                        f"{flask:.1f} ms minimal Flask CGI", ratio(ours, flask), target, result,
                        f"{notes}; {ours / stdlib:.2f}× the standard-library scan below; CPU {cpu[name]:.1f} ms, "
                        f"{cpu[name] / cpu['stdlib']:.2f}× that scan's {cpu['stdlib']:.1f} ms; {recorded} of "
                        f"{scan_processes} scans stored across this case's CGI scans{interpreter}"))
    if compare_own:
        ours, own_floor = wall["own"], wall["own-python"]
        rows.append(Row("cgi", f"CGI scan through app.cgi on this bench's python {platform.python_version()} "
                        f"({sys.executable})", f"{ours:.1f} ms", f"{wall['app.cgi']:.1f} ms on {SYSTEM_PYTHON}'s venv",
                        ratio(ours, wall["app.cgi"]), "report", "report",
                        f"median of {rounds}; `python -c pass` there {own_floor:.1f} ms, against {floor:.1f} ms; "
                        f"CPU {cpu['own']:.1f} ms"))
    rows.append(Row("cgi", "CGI scan by a standard-library script (SELECT, INSERT, UPDATE, COMMIT; fixed row)",
                    f"{stdlib:.1f} ms", f"{floor:.1f} ms `python -c pass`", ratio(stdlib, floor), "report", "report",
                    f"median of {rounds}; CPU {cpu['stdlib']:.1f} ms (`python -c pass` {cpu['python']:.1f} ms); "
                    "bench/baseline_cgi_scan.py: no classification, geo or hashing, what a plain standard-library "
                    "CGI scan costs on this machine (its sqlite3 import pays for functools and collections, which "
                    "app.cgi avoids)"))
    if "image" in samples:
        ours = wall["image"]
        rows.append(Row("cgi", "CGI cached QR image through app.cgi, process start to exit", f"{ours:.1f} ms",
                        f"{flask:.1f} ms minimal Flask CGI", ratio(ours, flask), "report", "report", notes))
    if "app.cgi" in commands and not bench.quick and shutil.which(CALLGRIND[0]):
        rows.append(_instructions_row(host.python, commands["app.cgi"], commands["stdlib"], environ))
    return rows


def _instructions_row(python: str, app_cgi: list[str], stdlib_scan: list[str], environ: dict[str, str]) -> Row:
    """Machine instructions of one CGI scan, counted by callgrind: the same count run after run, where the
    wall clock of this shared machine swings by a third. Against `python -c pass` and the standard-library
    scan, for how far above the floor the scan's own work is."""
    counts = {name: count_instructions(command, environ) for name, command in (
        ("app.cgi", app_cgi), ("stdlib", stdlib_scan), ("python", [python, "-c", "pass"]))}
    ours, floor, stdlib = (counts[name] / 1e6 for name in ("app.cgi", "python", "stdlib"))
    return Row("cgi", "instructions per CGI scan through app.cgi (callgrind)", f"{ours:.1f} M",
               f"{floor:.1f} M `python -c pass`", ratio(ours, floor), "report", "report",
               f"one scan each; the standard-library scan {stdlib:.1f} M ({ours / stdlib:.2f}× that); "
               f"deterministic, unlike the wall clock here")


def count_instructions(command: list[str], environ: dict[str, str]) -> int:
    completed = subprocess.run([*CALLGRIND, *command], env=environ, cwd=PROJECT_ROOT, capture_output=True,
                               timeout=CGI_TIMEOUT_SECONDS * 5)
    found = re.search(rb"Collected : (\d+)", completed.stderr)
    if completed.returncode != 0 or found is None:
        raise BenchError(f"callgrind could not count {' '.join(command[1:])}: {completed.stderr[-500:]!r}")
    return int(found.group(1))


def copy_of_instance(bench: Bench, name: str) -> Path:
    copy = bench.run_dir / f"instance-of-{name}"
    shutil.copytree(bench.data.instance, copy)
    return copy


def _scans_recorded(bench: Bench, databases: tuple[Path, ...]) -> int:
    return sum(bench.count(SCAN_COUNT_SQL, bench.data.scan_code_id, database=database) for database in databases)


def compile_modules(python: str, folder: Path = PROJECT_ROOT) -> None:
    """Write the app's compiled bytecode in folder, as the README's CGI guide has a host do. Where it is stale (a
    change made under PYTHONDONTWRITEBYTECODE, say), every process would compile the changed modules again, timed."""
    paths = [name for name in ("hosting.py", "app.py", "qrtrack", "bench") if (folder / name).exists()]
    subprocess.run([python, "-m", "compileall", "-q", *paths], cwd=folder, check=True, timeout=CGI_TIMEOUT_SECONDS)


def cgi_environ(bench: Bench, path: str, *, instance: Path | None = None) -> dict[str, str]:
    """What Apache's mod_cgi hands a script for GET path, plus the app's settings (for the bench's instance folder
    unless told another)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        **app_settings(instance or bench.data.instance, secret_key=bench.secret_key),
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "Apache", "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": PHONE_ADDRESS,
        "HTTP_HOST": "127.0.0.1", "HTTP_USER_AGENT": PHONE_USER_AGENT,
    }


def time_cgi(command: list[str], environ: dict[str, str], *, expect: bytes) -> tuple[float, float]:
    elapsed, cpu, completed = _time_process(command, environ)
    if not completed.stdout.startswith(expect):
        raise BenchError(f"{' '.join(command[1:])} did not answer {expect.decode()} under CGI: "
                         f"{completed.stdout[:200]!r} {completed.stderr[-500:]!r}")
    return elapsed, cpu


def _time_process(command: list[str], environ: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Milliseconds from starting the process to its exit, its CPU milliseconds (user and system), and what
    it wrote. CPU time is the steadier figure on a shared machine: waiting for a core does not count."""
    before = _children_cpu_seconds()
    started = time.perf_counter()
    completed = subprocess.run(command, env=environ, cwd=PROJECT_ROOT, capture_output=True,
                               timeout=CGI_TIMEOUT_SECONDS)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, (_children_cpu_seconds() - before) * 1000, completed


def _children_cpu_seconds() -> float:
    """CPU seconds of every child process waited for so far; the processes here run one at a time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
