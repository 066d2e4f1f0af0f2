"""Instructions per 304 revisit (issue 17), counted by valgrind, so code trees can be compared
on a loaded machine where CPU seconds are too noisy to tell 10 % apart.

bench_revisits' pages and rounds: a first poll and an unchanged-200 round (plain, to set up
the database), then, for each TREE in turn, the idle round and the 304 round replayed from a
copy of that database, their crawl processes under `valgrind --tool=callgrind` (~35x slower:
about 4 minutes a tree at 1,000 pages). The count is nearly deterministic (two runs of one
tree differed by 0.03 %); it leaves out the kernel's time and cache misses, so it compares
trees, it is not a CPU figure. Byte-compile every tree first (`python -m compileall -q crawler
scheduler storage`): with PYTHONDONTWRITEBYTECODE set, an uncompiled tree compiles its
modules in every process. Run it from a directory that is none of the trees (`python -m
crawler` puts the working directory first on sys.path).

Usage: python bench/bench_revisits_ir.py TREE [TREE ...] [--feeds 20] [--items 50]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_revisits as br  # noqa: E402

import scheduler.runner as runner  # noqa: E402


class Counted:
    """Spawns the round's crawl processes, under callgrind when ``on``."""

    def __init__(self, out: Path) -> None:
        self.out, self.on, self.files, self.n = out, False, [], itertools.count()

    def spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(runner.PROJECT_ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "crawler"]
        if self.on:
            self.files.append(self.out / f"callgrind-{next(self.n)}.out")
            cmd = ["valgrind", "--tool=callgrind", "-q", "--dump-instr=no",
                   f"--callgrind-out-file={self.files[-1]}", *cmd]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                encoding="utf-8", env=env, start_new_session=True)

    def instructions(self, config: Any) -> float:
        """Instructions (billions) of one round's crawl processes."""
        self.on, self.files = True, []
        try:
            crawl(config)
        finally:
            self.on = False
        total = 0
        for path in self.files:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    total += int(line.split()[1])
        return total / 1e9


def crawl(config: Any) -> None:
    report = runner.crawl_round(config, None, timeout=3600)
    bad = [e for e in report.sources if e.outcome == "error"]
    assert not bad, bad[0].message


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--items", type=int, default=50)
    args = parser.parse_args()
    pages = args.feeds * args.items
    urls = br.serve(args.feeds, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        engine, config = br.bench_database(url, urls, "60m")
        engine.dispose()
        counted = Counted(Path(tmp))
        runner._spawn = counted.spawn  # type: ignore[assignment]  # the bench's own spawner
        runner.PROJECT_ROOT = args.trees[0].resolve()
        crawl(config)  # the first poll
        br.make_due(url)
        br.Handler.conditional = False
        crawl(config)  # the unchanged 200s: every page's validators and baseline kept
        br.Handler.conditional = True
        snapshot = Path(tmp) / "snapshot.db"
        shutil.copy(db, snapshot)
        for tree in args.trees:
            runner.PROJECT_ROOT = tree.resolve()
            for suffix in ("-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            shutil.copy(snapshot, db)
            idle = counted.instructions(config)
            br.make_due(url)
            not_modified = counted.instructions(config)
            per = (not_modified - idle) * 1e3 / pages
            print(f"{tree}: idle round {idle:.3f} G, 304 round {not_modified:.3f} G instructions: "
                  f"{per:.2f} M a 304 revisit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
