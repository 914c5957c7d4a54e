"""The README is the front page (and the PyPI description): at most 200 lines of at most 120 characters, naming
every module of the package (the details are docs/architecture.rst)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_is_a_front_page_that_names_every_module():
    with open(os.path.join(REPO, "README.rst")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= 200
    assert [i + 1 for i, line in enumerate(lines) if len(line) > 120] == []
    text = "\n".join(lines)
    for directory, _, names in os.walk(os.path.join(REPO, "poisson_tf")):
        for name in names:
            if name.endswith(".py") and name != "__init__.py":
                assert f"``{name}``" in text, os.path.relpath(os.path.join(directory, name), REPO)
