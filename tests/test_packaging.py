"""What a release carries: the wheel and sdist as PyPI and packagers get them (issue 10)."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built from this checkout by hatchling."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_the_license_is_in_the_repository_the_wheel_and_the_sdist(
    built: tuple[Path, Path],
) -> None:
    wheel, sdist = built
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    with zipfile.ZipFile(wheel) as archive:
        assert any(name.endswith("/licenses/LICENSE") for name in archive.namelist())
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} <= names
    # The CI's own files stay out.
    assert not any(name.startswith((".ci/", ".github/")) for name in names)


def test_the_metadata_says_what_pypi_shows(built: tuple[Path, Path]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith("/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier") or []
    for version in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Framework :: AsyncIO" in classifiers
    assert "Framework :: Pytest" in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert "py.typed" in " ".join(zipfile.ZipFile(wheel).namelist())


def test_the_readme_links_work_on_pypi() -> None:
    """PyPI shows the README away from the repository: relative links break there."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", readme) + re.findall(r"<(https?://[^>]+)>", readme)
    assert targets
    assert [target for target in targets if not target.startswith("https://")] == []


def test_the_readme_commands_exist() -> None:
    """Issue 10: the docs build command of the README needed Sphinx nobody had installed."""
    readme = (ROOT / "README.md").read_text()
    scripts = set(re.findall(r"\./scripts/([a-z_]+)", readme))
    assert {"demo", "test", "docs"} <= scripts
    for script in scripts:
        path = ROOT / "scripts" / script
        assert path.exists(), path
        assert path.stat().st_mode & 0o111, path
    assert ".[cli,docs]" in (ROOT / "scripts" / "docs").read_text()
    assert "sphinx-build" not in readme
