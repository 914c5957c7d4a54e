"""The package's import graph: no cycles (function-level imports included), and the checker finds one."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(REPO, "scripts", "check_imports.py")


def check(root):
    return subprocess.run([sys.executable, CHECK, str(root)], capture_output=True, text=True)


def test_the_package_has_no_import_cycle():
    result = check(os.path.join(REPO, "poisson_tf"))
    assert result.returncode == 0, result.stderr
    assert "no import cycles" in result.stdout


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n",
                     "pkg/b.py": "def f():\n    from pkg import a\n    return a\n"})
    result = check(tmp_path / "pkg")
    assert result.returncode == 1 and "import cycle: pkg.a -> pkg.b -> pkg.a" in result.stderr


def test_a_package_init_that_reimports_its_importer_is_a_cycle_and_siblings_are_not(tmp_path):
    # sub/__init__ re-exports sub.x; sub.x importing a sibling is fine, importing the package itself is a cycle.
    write(tmp_path, {"pkg/__init__.py": "", "pkg/sub/__init__.py": "from pkg.sub.x import f\n",
                     "pkg/sub/x.py": "from pkg.sub import y\ndef f():\n    return y\n", "pkg/sub/y.py": "",
                     "pkg/c.py": "import pkg.sub.x\n"})
    assert check(tmp_path / "pkg").returncode == 0
    write(tmp_path, {"pkg/sub/y.py": "def g():\n    from pkg import sub\n    return sub\n"})
    result = check(tmp_path / "pkg")
    assert result.returncode == 1 and "pkg.sub -> pkg.sub.x -> pkg.sub.y -> pkg.sub" in result.stderr
