"""Instructions XLA executes to compile each program of ``compile_time.py``, under valgrind.

Compile times on a shared 2-core machine swing by 10-20% between runs of the same code,
more than most changes to a program move them. The number of instructions the
compiler executes barely moves: each program is lowered in a process of its own run
by callgrind with instrumentation off, switched on once the program is lowered and
off once it is compiled, so that the count is the compile's, on all of its threads.
Three runs of the D=64 sampler counted 7.72, 7.75 and 7.75 billion instructions (wall
times of one program: 10-20% apart). Each program takes 1-2 minutes under valgrind;
``--jobs`` run side by side. The count is the compile's work on the CPU; its wall time
also depends on how that work splits over the threads.

    python benchmarks/compile_instructions.py --features 64 --jobs 2

Needs valgrind (Debian: ``apt-get install valgrind``). Writes
benchmarks/results/compile_instructions.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
PROGRAMS = ("maf_jax train", "maf_jax sample", "flowjax train", "flowjax sample")


def child(features: int, program: str) -> None:
    """Lowers ``program``, then compiles it between two answers of the parent."""
    import compile_time

    fn, args = compile_time.builders(features)[program]()
    lowered = fn.lower(*args)
    print("lowered", flush=True)
    sys.stdin.readline()  # the parent has switched the instrumentation on
    lowered.compile()
    print("compiled", flush=True)
    sys.stdin.readline()  # and off


def count(features: int, program: str) -> int:
    """Instructions executed in XLA's compile of ``program`` at ``features``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        command += [f"--callgrind-out-file={out}", sys.executable, __file__, "--child"]
        command += ["--features", str(features), "--program", program]
        pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process = subprocess.Popen(command, text=True, **pipes)

        def step(expected: str, switch: str) -> None:
            if process.stdout.readline().strip() != expected:
                process.kill()
                raise RuntimeError(f"{program} at {features}: {process.stderr.read()[-2000:]}")
            toggle = ["callgrind_control", "-i", switch, str(process.pid)]
            subprocess.run(toggle, check=True, capture_output=True)
            process.stdin.write("go\n")
            process.stdin.flush()

        step("lowered", "on")
        step("compiled", "off")
        _, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{program} at {features}: {stderr[-2000:]}")
        totals = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
        return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[64])
    parser.add_argument("--programs", nargs="+", default=list(PROGRAMS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--program", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.features[0], args.program)
    import compile_time
    import speed

    known = list(compile_time.builders(1))
    unknown = [name for name in args.programs if name not in known]
    if unknown:
        parser.error(f"unknown programs {unknown}; expected some of {known}")
    cases = [(features, program) for features in args.features for program in args.programs]
    with ThreadPoolExecutor(args.jobs) as pool:
        counts = dict(zip(cases, pool.map(lambda case: count(*case), cases)))
    lines = ["| D | program | instructions (10^9) |", "|---|---|---|"]
    lines += [f"| {d} | {name} | {n / 1e9:.2f} |" for (d, name), n in counts.items()]
    notes = []
    for features in args.features:
        sums = {
            lib: sum(counts.get((features, f"{lib} {part}"), 0) for part in ("train", "sample"))
            for lib in ("maf_jax", "flowjax")
        }
        if all(sums.values()):
            ratio = sums["maf_jax"] / sums["flowjax"]
            notes.append(f"- D={features}: (maf_jax train + sample) / flowjax's: {ratio:.2f}")
    speed.write_report(args.out, "compile_instructions.md", lines, notes)


if __name__ == "__main__":
    main()
