"""A memory diagnostic for the daemon (bench/README.md, "Daemon"), kept out of the product: it
starts ``newsmon`` in this process with the tracer running.

    .venv/bin/python bench/memdiag.py --prefix /tmp/snap [--minutes 5] [--frames 1] -- \
        --config newsmon.toml run

Every ``--minutes`` it writes ``PREFIX-NNN.txt``: RSS, the traced Python heap, glibc's malloc
figures, CPython's small-object arenas, threads, object counts per type, distinct SQL texts per
statement shape, and the top allocation sites (absolute and against the previous snapshot).
``--frames`` is tracemalloc's traceback depth; 0 leaves tracemalloc off (the other figures only,
without tracing's own memory). ``bench_daemon.py memory --diagnose PREFIX`` starts the daemon
through it."""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

TOP = 30


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def mallinfo() -> dict[str, int]:
    """glibc's mallinfo2 (all arenas): arena = bytes from brk/sbrk, uordblks = in use,
    fordblks = free in the heap, hblkhd = mmapped chunks. Empty when not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {field[0]: getattr(info, field[0]) for field in _MallInfo2._fields_}


def sqlite_memory() -> tuple[int, int]:
    """(bytes in use, high-water mark) of every SQLite connection in this process."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return 0, 0
    lib.sqlite3_memory_used.restype = lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    return lib.sqlite3_memory_used(), lib.sqlite3_memory_highwater(0)


def malloc_arenas() -> list[tuple[int, int, int]]:
    """Per glibc arena (malloc_info): (heap number, bytes of system memory, bytes free in it)."""
    import re
    import tempfile

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return []
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        fp = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        xml = Path(out.name).read_text(encoding="utf-8")
    arenas = []
    for nr, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', xml, re.S):
        total = re.search(r'<system type="current" size="(\d+)"', body)
        free = re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body)
        arenas.append((int(nr), int(total.group(1)) if total else 0, sum(int(f) for f in free)))
    return arenas


def obmalloc() -> dict[str, int]:
    """CPython's small-object allocator (sys._debugmallocstats, which prints on fd 2: captured
    here, so a log line written at that moment lands in the capture)."""
    import tempfile

    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
    wanted = {"# arenas allocated current": "arenas", "# arenas highwater mark": "highwater",
              "# arenas reclaimed": "reclaimed", "# bytes in allocated blocks": "used_bytes",
              "# bytes in available blocks": "free_bytes"}
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in wanted:
            values[wanted[key.strip()]] = int(value.strip().replace(",", ""))
    return values


def _status(*keys: str) -> dict[str, str]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            values[key] = value.strip()
    return values


def _object_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class StatementTexts:
    """Distinct SQL texts executed (every engine): a text with a different number of ``IN``
    parameters is a separate prepared statement in each connection's statement cache."""

    def __init__(self) -> None:
        self.texts: dict[str, set[int]] = collections.defaultdict(set)
        self.lock = threading.Lock()

    def listen(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self.seen)

    def seen(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        import re

        shape = re.sub(r"(\?|%\(\w+\)s)(, (\?|%\(\w+\)s))+", "<list>", " ".join(statement.split()))
        with self.lock:
            self.texts[shape[:100]].add(hash(statement))

    def report(self) -> list[str]:
        with self.lock:
            rows = sorted(((len(v), k) for k, v in self.texts.items()), reverse=True)
        return [f"distinct SQL texts: {sum(n for n, _ in rows)} from {len(rows)} statement shapes; most varied:"] + [
            f"  {n:5d} {shape}" for n, shape in rows[:8]]


class Tracer:
    def __init__(self, prefix: str, minutes: float, frames: int) -> None:
        self.prefix, self.interval = prefix, minutes * 60
        self.frames = frames
        self.started = time.monotonic()
        self.previous: tracemalloc.Snapshot | None = None
        self.previous_counts: collections.Counter[str] | None = None
        self.n = 0
        self.statements = StatementTexts()

    def start(self) -> None:
        self.statements.listen()
        if self.frames:
            tracemalloc.start(self.frames)
        threading.Thread(target=self._loop, name="memdiag", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.write()
            except Exception as exc:  # a diagnostic never takes the daemon down
                Path(f"{self.prefix}-error.txt").write_text(repr(exc), encoding="utf-8")

    def write(self) -> None:
        gc.collect()
        counts = _object_counts()
        status = _status("VmRSS", "RssAnon", "Threads")
        small = obmalloc()
        lines = [f"elapsed {(time.monotonic() - self.started) / 60:.1f} min; {status}",
                 f"mallinfo2 (MiB): { {k: round(v / 2**20, 2) for k, v in mallinfo().items()} }",
                 f"sqlite3_memory_used {sqlite_memory()[0] / 2**20:.2f} MiB (high-water "
                 f"{sqlite_memory()[1] / 2**20:.2f})",
                 "malloc arenas (MiB system/free): " + ", ".join(
                     f"#{nr} {size / 2**20:.2f}/{free / 2**20:.2f}" for nr, size, free in malloc_arenas()),
                 f"obmalloc: {small.get('arenas')} arenas of 1 MiB (highwater {small.get('highwater')}, "
                 f"reclaimed {small.get('reclaimed')}), {small.get('used_bytes', 0) / 2**20:.2f} MiB in "
                 f"use, {small.get('free_bytes', 0) / 2**20:.2f} MiB free in pools",
                 f"threads: {sorted(t.name for t in threading.enumerate())}",
                 f"gc objects: {sum(counts.values())}; "
                 + ", ".join(f"{name} {counts[name]}" for name in ("Connection", "Statement", "Thread")),
                 *self.statements.report()]
        if self.frames:
            current, peak = tracemalloc.get_traced_memory()
            lines.append(f"traced {current / 2**20:.2f} MiB (peak {peak / 2**20:.2f}); tracemalloc's own "
                         f"{tracemalloc.get_tracemalloc_memory() / 2**20:.2f} MiB")
        lines.append("")
        if self.previous_counts is not None:
            diff = counts.copy()
            diff.subtract(self.previous_counts)
            lines.append("object count changes since the previous snapshot:")
            lines += [f"  {n:+8d} {name}" for name, n in
                      sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:TOP] if n]
            lines.append("")
        snapshot = None
        if self.frames:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            lines.append(f"top {TOP} by line:")
            lines += [f"  {stat}" for stat in snapshot.statistics("lineno")[:TOP]]
        if snapshot is not None and self.previous is not None:
            lines += ["", f"top {TOP} changes by line since the previous snapshot:"]
            lines += [f"  {stat}" for stat in snapshot.compare_to(self.previous, "lineno")[:TOP]]
            if self.frames > 1:
                lines += ["", "top 8 changes by traceback:"]
                for stat in snapshot.compare_to(self.previous, "traceback")[:8]:
                    lines.append(f"  {stat}")
                    # file:line only: formatting with source text would fill linecache (a growth of its own)
                    lines += [f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback]
        self.n += 1
        Path(f"{self.prefix}-{self.n:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.previous, self.previous_counts = snapshot, counts


def main(argv: list[str] | None = None) -> None:
    """Start the tracer, then run ``newsmon`` with the arguments after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", required=True, help="snapshots go to PREFIX-001.txt, -002 …")
    parser.add_argument("--minutes", type=float, default=5.0, help="between snapshots (default 5)")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth; 0: tracemalloc off")
    parser.add_argument("newsmon", nargs=argparse.REMAINDER, help="-- then newsmon's arguments")
    args = parser.parse_args(argv)
    newsmon_args = args.newsmon[1:] if args.newsmon[:1] == ["--"] else args.newsmon
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scheduler.cli import cli

    Tracer(args.prefix, args.minutes, args.frames).start()
    cli(args=newsmon_args, prog_name="newsmon")


if __name__ == "__main__":
    main()
