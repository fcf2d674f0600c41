"""Mutation testing: does the suite catch the bugs people make? Run before a release, not in CI.

    python tests/mutation/run_mutants.py                  every mutant (about 20 minutes on 2 cores)
    python tests/mutation/run_mutants.py ID [ID ...]      only these (ids from mutants.py)
    python tests/mutation/run_mutants.py --commit HEAD    the code of a commit, not the working tree
    python tests/mutation/run_mutants.py --unfailed       also list the tests that no mutant fails
    python tests/mutation/run_mutants.py --check          only check that every mutant applies

Run it from the repository root with the project's environment active (``. .venv/bin/activate``).
It copies the working tree (without .git, .venv and caches), or with ``--commit`` the files of
that commit (``git archive``: a score others can reproduce), to a temporary directory, runs there
every test the mutants name, once, on the unchanged code (they must pass), and then, for each
mutant in ``mutants.py``: replaces its ``original`` text by its ``replacement`` in the copy, runs
its tests (``pytest -x``), and puts the file back. A mutant is *caught* when its tests fail (or
time out), and *survives* when they pass. The checkout itself is never changed.

The score is caught / all; the run fails (exit status 1) below ``--min-score`` (0.95). The last
measured score is in ``docs/testing.md``.

The tests run as CI's second run does (``.ci/run``): with ``NUMBA_BOUNDSCHECK=1`` and a Numba
cache of their own, so a mutant that indexes past an array fails with an IndexError instead of
crashing. Each mutated file gets a modification time of its own, so that neither Python's
bytecode cache nor Numba's (both keyed by the source file's time and size) can hand a mutant
the code compiled for another.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mutants import MUTANTS  # noqa: E402

#: What is not copied: version control, environments, caches, outputs.
IGNORED = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".hypothesis",
                                 "*.nbi", "*.nbc", "*.egg-info", "build", "dist", "runs", "*.npz")


def check(mutants, root=ROOT):
    """Every mutant's original text occurs exactly once in its file, and its tests exist."""
    problems = []
    for m in mutants:
        with open(os.path.join(root, m.file), encoding="utf-8") as f:
            text = f.read()
        count = text.count(m.original)
        if count != 1:
            problems.append(f"{m.id}: its original text occurs {count} times in {m.file}")
        elif m.file.endswith(".py"):
            try:                                # a mutant must be a bug, not a syntax error
                compile(text.replace(m.original, m.replacement), m.file, "exec")
            except SyntaxError as err:
                problems.append(f"{m.id}: the mutated file does not compile ({err})")
        if m.original == m.replacement:
            problems.append(f"{m.id}: the replacement is the original")
        for test in m.tests:
            if not os.path.exists(os.path.join(root, test.split("::")[0])):
                problems.append(f"{m.id}: no test file {test}")
    ids = [m.id for m in mutants]
    problems += [f"{i}: two mutants have this id" for i in sorted({i for i in ids if ids.count(i) > 1})]
    return problems


def run_tests(tree, tests, env, timeout, stop_at_first=True):
    """pytest on ``tests`` in ``tree``: (passed, the first failure or the last line of its output,
    seconds, the names of the test functions that failed)."""
    start = time.perf_counter()
    first = ["-x"] if stop_at_first else []
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", *first, "-q", "-rfE", "-p", "no:cacheprovider",
                                 *tests], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.perf_counter() - start, set()
    output = (result.stdout + result.stderr).strip().splitlines()
    failed = [line for line in output if line.startswith(("FAILED", "ERROR"))]
    summary = (failed[:1] or output[-1:] or [""])[0]
    if result.returncode not in (0, 1):         # 1: tests failed; others: a crash, no tests, ...
        summary = f"pytest exit status {result.returncode}: {summary}"
    names = {test_function(line.split()[1]) for line in failed if len(line.split()) > 1}
    return result.returncode == 0, summary, time.perf_counter() - start, names


def test_function(node_id):
    """tests/test_x.py::test_y[case] -> tests/test_x.py::test_y"""
    return node_id.split("[")[0]


def collected(tree, tests, env):
    """The test functions that pytest collects from ``tests``."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *tests],
                            cwd=tree, env=env, capture_output=True, text=True)
    return {test_function(line) for line in result.stdout.splitlines() if "::" in line}


def apply(tree, mutant, serial):
    """Write the mutant into ``tree``; returns a function that puts the file back as it was."""
    path = os.path.join(tree, mutant.file)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    before = os.stat(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(mutant.original, mutant.replacement))
    # A time no other version of this file has had (whole seconds apart: .pyc keeps seconds).
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + (serial + 1) * 10**9))

    def restore():
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return restore


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="run only these mutants")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for one mutant's tests")
    parser.add_argument("--min-score", type=float, default=0.95)
    parser.add_argument("--commit", help="test the files of this commit (git archive) instead of the working tree")
    parser.add_argument("--unfailed", action="store_true",
                        help="run every mutant's tests to the end, and list the tests that no mutant fails")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args()

    unknown = set(args.ids) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {sorted(unknown)}")
    mutants = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    work = tempfile.mkdtemp(prefix="tinycnn-mutants-")
    tree = os.path.join(work, "tree")
    try:
        source = copy_tree(tree, args.commit)
        problems = check(mutants, tree)
        if problems or args.check:
            print("\n".join(problems) or f"{len(mutants)} mutants, each applies once to {source}.")
            return 1 if problems else 0
        return mutation_run(args, mutants, tree, work, source)
    finally:
        if args.keep:
            print(f"Kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def copy_tree(tree, commit):
    """Put the code to mutate in ``tree``: the working tree, or ``commit``'s files. Returns what
    it copied, in words."""
    if commit is None:
        shutil.copytree(ROOT, tree, ignore=IGNORED)
        return f"the working tree of {ROOT}"
    sha = subprocess.run(["git", "rev-parse", "--verify", commit + "^{commit}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    os.makedirs(tree)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    return f"commit {sha[:12]}"


def mutation_run(args, mutants, tree, work, source):
    """The baseline, then every mutant; returns the exit status."""
    env = {**os.environ, "PYTHONPATH": tree, "NUMBA_CACHE_DIR": os.path.join(work, "numba-cache"),
           "NUMBA_BOUNDSCHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    print(f"Mutation run: {len(mutants)} mutants, on {source}", flush=True)
    all_tests = sorted({t for m in mutants for t in m.tests})
    passed, summary, seconds, _ = run_tests(tree, all_tests, env, args.timeout * 2)
    if not passed:
        print(f"The tests fail without any mutant ({summary}); fix that first.")
        return 2
    print(f"Unchanged code: the {len(all_tests)} tests named pass ({seconds:.0f} s).\n", flush=True)
    survivors, failing, start = [], set(), time.perf_counter()
    for serial, mutant in enumerate(mutants):
        restore = apply(tree, mutant, serial)
        try:
            passed, summary, seconds, names = run_tests(tree, mutant.tests, env, args.timeout,
                                                        stop_at_first=not args.unfailed)
        finally:
            restore()
        failing |= names
        if passed:
            survivors.append(mutant)
        verdict = "SURVIVED" if passed else "caught  "
        print(f"{verdict} {mutant.id:40} {seconds:5.0f} s  {'' if passed else summary[:90]}", flush=True)
    caught = len(mutants) - len(survivors)
    score = caught / len(mutants)
    print(f"\nScore: {caught}/{len(mutants)} mutants caught = {score:.1%} "
          f"({(time.perf_counter() - start) / 60:.1f} min, on {source}).")
    for m in survivors:
        print(f"  survived: {m.id} ({m.file}): {m.bug}")
    if args.unfailed:
        unfailed = sorted(collected(tree, all_tests, env) - failing)
        print(f"\n{len(unfailed)} tests in the files named fail for no mutant:")
        print("\n".join(f"  {name}" for name in unfailed))
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
