"""Promises the project makes about itself: the quick start, CI, and light imports."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_commands():
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python examples/mnist.py")
    assert commands[1].endswith("pytest")
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert commands[1] in ci.splitlines()


def test_import_tinycnn_loads_no_matplotlib_requests_or_cupy():
    code = ("import sys, tinycnn, tinycnn.layers, tinycnn.datasets, tinycnn.gradcheck; "
            "print(sorted(m for m in ('matplotlib', 'requests', 'cupy', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
