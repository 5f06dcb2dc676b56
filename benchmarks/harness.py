"""What every benchmark shares, so that each script keeps only what it measures: the command line
(its docstring as the help, the inputs most of them read with the README's paths as defaults,
--results), timing with warm-up and repeats, the machine line, and the section appended to
RESULTS.md.

    import harness  # a script's own folder is on sys.path when it runs

    parser = harness.parser(__doc__, "model", "images")
    harness.add_results(parser)
    args = parser.parse_args()
    ms = 1000 * harness.best_of(lambda: work(args.model))
    harness.append_section(harness.heading("What it measures") + f"- machine: ...", args.results)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# The inputs most benchmarks read: (default, help). The defaults are where the README's commands
# leave them, relative to the repository root the scripts are run from.
INPUTS = {
    "model": (Path("runs/f8k/model"), "trained model directory"),
    "dataset": (Path("runs/f8k/dataset"), "ingested dataset directory"),
    "features": (Path("runs/f8k/features"), "feature store directory"),
    "vocab": (Path("runs/f8k/vocab/vocab.json"), "vocab.json"),
    "images": (Path("../shared/flickr8k"), "Flickr8k directory"),
}
# The CPU features that decide which int8 and bf16 kernels torch picks, hence the speeds measured.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni")


def parser(doc: str, *inputs: str, required: bool = False, **defaults: Path):
    """The script's parser, its docstring (with the commands that run it) as the help, and
    `inputs` of INPUTS as --options: `required`, or with INPUTS' default (or `defaults`')."""
    made = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_inputs(made, *inputs, required=required, **defaults)
    return made


def add_inputs(parser, *inputs: str, required: bool = False, **defaults: Path) -> None:
    """--<input> for each of `inputs` (names of INPUTS), on any parser or subparser."""
    for name in inputs:
        default, description = INPUTS[name]
        default = defaults.get(name, default)
        if required:
            parser.add_argument(f"--{name}", type=Path, required=True, help=description)
        else:
            parser.add_argument(
                f"--{name}", type=Path, default=default, help=f"{description} (default: {default})"
            )


def add_results(parser, default: Path = RESULTS) -> None:
    parser.add_argument(
        "--results", type=Path, default=default, help="markdown file the section is appended to"
    )


def timings(work: Callable[[], object], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `work`, after `warmup` untimed ones (first calls pay
    for allocators, oneDNN's kernel choice, caches)."""
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def best_of(work: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """The fastest of `repeats` timed calls: the least disturbed by a neighbour's load."""
    return min(timings(work, repeats, warmup))


def _cpu_info() -> dict[str, str]:
    """lscpu's fields ("Model name", "Flags"...); /proc/cpuinfo's where lscpu is missing."""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}
        ).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    except OSError:
        fields = {}
    if "Model name" not in fields or "Flags" not in fields:
        cpuinfo = dict(
            line.split(":", 1)
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if ":" in line
        )
        cpuinfo = {key.strip(): value for key, value in cpuinfo.items()}
        fields.setdefault("Model name", cpuinfo.get("model name", platform.processor()))
        fields.setdefault("Flags", cpuinfo.get("flags", ""))
    return {key.strip(): value.strip() for key, value in fields.items()}


def cpu_flags(flags: str | None = None) -> str:
    """Which of CPU_FLAGS this CPU has, as `avx2 yes, avx512f no, ...`."""
    have = set((flags if flags is not None else _cpu_info()["Flags"]).split())
    return ", ".join(f"{flag} {'yes' if flag in have else 'no'}" for flag in CPU_FLAGS)


def machine() -> str:
    """The machine line: CPU model (lscpu), cores, memory, Python, kernel, and CPU_FLAGS."""
    cpu = _cpu_info()
    memory_kib = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    return (
        f"{cpu['Model name']}, {os.cpu_count()} cores, {memory_kib / 2**20:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"CPU flags: {cpu_flags(cpu['Flags'])}"
    )


def command() -> str:
    """The command line that ran this script, as a section records it."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def heading(title: str, at: dt.datetime | None = None) -> str:
    """A section's first line: `## <title>, <UTC date and time>` (`at`, default now)."""
    return f"\n## {title}, {at or dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"


def append_section(section: str, results: Path = RESULTS) -> None:
    """Append `section` to `results` (started with its title when new) and print it."""
    if not results.exists():
        results.write_text(
            "# Benchmark results\n\nMeasured numbers, newest last. Each section "
            "names the command that produced it.\n"
        )
    with open(results, "a") as handle:
        handle.write(section)
    print(section)
