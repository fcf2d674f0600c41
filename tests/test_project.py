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


def tinycnn_imports():
    """{module: set of tinycnn modules it imports}, from the source, function-level imports too."""
    import ast
    package = os.path.join(ROOT, "tinycnn")
    modules = {}
    for folder, _, files in os.walk(package):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
                modules[name] = (os.path.join(folder, f), rel[-1] == "__init__")
    graph = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{base}.{node.module}" if node.level and node.module else (node.module if not node.level else base)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_two_tinycnn_modules_import_each_other():
    """A reader following the imports never goes round in a circle (package __init__ files,
    which gather their modules' names, aside)."""
    graph = {m: {t for t in ts if not t.endswith(("tinycnn", ".layers", ".kernels", ".datasets"))}
             for m, ts in tinycnn_imports().items()}
    assert "tinycnn.model" in graph["tinycnn.models"]        # the graph is really read
    path = []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        return None

    for module in sorted(graph):
        cycle = visit(module)
        assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_gpu_skips_are_reported_on_one_line():
    from conftest import GPU_SKIP_REASON, gpu_available
    if gpu_available():
        return                                      # nothing is skipped where there is a GPU
    out = subprocess.run([sys.executable, "-m", "pytest", "-ra", "-q", "-p", "no:cacheprovider",
                          "tests/test_gradients.py", "tests/test_gpu.py", "-k", "relu or softmax or cupy"],
                         capture_output=True, text=True, cwd=ROOT)
    skipped = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and GPU_SKIP_REASON in skipped[0], out.stdout
    assert int(re.search(r"SKIPPED \[(\d+)\]", skipped[0]).group(1)) > 3


def test_readme_reading_path_comes_right_after_the_quick_start_and_the_map_names_every_module():
    readme = open(os.path.join(ROOT, "README.md")).read()
    sections = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert sections[:2] == ["Quick start", "Read the code"]
    path = readme.split("## Read the code", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\d+\. `([^`]+)`", path, flags=re.M)
    assert steps[:3] == ["tinycnn/layers/base.py", "layers/dense.py", "layers/activations.py"]
    for step in steps:
        assert os.path.exists(os.path.join(ROOT, step if step.startswith("tinycnn") else "tinycnn/" + step)), step
    tree = path.split("### Map of the package", 1)[1]
    for folder, _, files in os.walk(os.path.join(ROOT, "tinycnn")):
        for f in files:
            if f.endswith(".py") and not f.startswith("_") and "datasets" not in folder:
                assert re.search(rf"^\s+{re.escape(f)}\s", tree, flags=re.M), f"{f} is missing from the map"


def test_every_link_in_the_readme_and_docs_points_at_a_file_that_exists():
    """Relative links (``[text](path)``, ``![alt](path)``) in README.md and docs/*.md: the file
    each names exists (anchors aside). Web links are not followed (there may be no network)."""
    pages = [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    checked, missing = 0, []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", open(page).read()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            checked += 1
            path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                missing.append(f"{os.path.relpath(page, ROOT)} -> {target}")
    assert checked >= 10 and not missing, missing


def test_a_cold_numba_cache_says_once_that_the_kernels_compile(tmp_path):
    """The first fit on a machine compiles the kernels; it says so in one line. A warm cache
    (the same NUMBA_CACHE_DIR, a second process) prints nothing extra, and verbose=0 nothing."""
    code = ("import numpy as np; from tinycnn import Sequential; from tinycnn.layers import Dense; "
            "m = Sequential([Dense(3)], input_shape=(4,), seed=0); m.compile('adam'); "
            "m.fit(np.ones((8, 4), np.float32), np.zeros(8, int), verbose={verbose}, threads=1)")

    def run(verbose, cache):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / cache))
        out = subprocess.run([sys.executable, "-c", code.format(verbose=verbose)], capture_output=True, text=True,
                             cwd=ROOT, env=env, check=True)
        return out.stdout.count("Compiling tinycnn's Numba kernels")

    assert run(verbose=2, cache="a") == 1
    assert run(verbose=2, cache="a") == 0
    assert run(verbose=0, cache="b") == 0
