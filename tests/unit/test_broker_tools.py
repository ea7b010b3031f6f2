"""ensure_kafka without a network: missing tools, a failed fetch, and the fetch-once cache.

Fake `java` and `mvn` (small Python scripts) on a private PATH stand in for the real ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from churnwatch.broker import KAFKA_VERSION, ensure_kafka
from churnwatch.exceptions import BrokerError, MissingToolError

# What copy-dependencies does, on a tiny scale: put jars into -DoutputDirectory.
_FAKE_MVN = f"""\
import pathlib, sys
out = pathlib.Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory")))
out.mkdir(parents=True)
for jar in ("kafka_2.13-{KAFKA_VERSION}.jar", "scala-library.jar"):
    (out / jar).touch()
"""
_BROKEN_MVN = """\
for i in range(1, 41):
    print(f"mvn line {i}")
raise SystemExit(1)
"""


def _tool(bin_dir: Path, name: str, python_code: str = "") -> None:
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\n{python_code}")
    script.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that is the whole PATH."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


@pytest.fixture
def pom(tmp_path: Path) -> Path:
    path = tmp_path / "pom.xml"
    path.write_text("<project/>")
    return path


def test_no_java_and_no_maven(bin_dir: Path, pom: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingToolError, match=r"`java` is not on PATH.*apt-get install"):
        ensure_kafka(tmp_path / "cache", pom)


def test_java_but_no_maven(bin_dir: Path, pom: Path, tmp_path: Path) -> None:
    _tool(bin_dir, "java")
    with pytest.raises(MissingToolError, match=r"`mvn` is not on PATH.*maven"):
        ensure_kafka(tmp_path / "cache", pom)


def test_cached_jars_need_no_maven(bin_dir: Path, pom: Path, tmp_path: Path) -> None:
    _tool(bin_dir, "java")
    version_dir = tmp_path / "cache" / f"kafka-{KAFKA_VERSION}"
    version_dir.mkdir(parents=True)
    (version_dir / "fetched.ok").write_text(KAFKA_VERSION)
    assert ensure_kafka(tmp_path / "cache", pom) == version_dir / "lib"


def test_failed_fetch_shows_mvn_output_tail_and_is_retried(
    bin_dir: Path, pom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tool(bin_dir, "java")
    _tool(bin_dir, "mvn", _BROKEN_MVN)
    with pytest.raises(BrokerError, match=r"mvn failed \(exit code 1\)") as failure:
        ensure_kafka(tmp_path / "cache", pom)
    lines = str(failure.value).splitlines()
    assert lines[-1] == "mvn line 40"
    assert "mvn line 20" not in lines
    assert "fetching Apache Kafka" in capsys.readouterr().err

    # A later call with a working Maven fetches again, then reuses the jars without Maven.
    _tool(bin_dir, "mvn", _FAKE_MVN)
    lib_dir = ensure_kafka(tmp_path / "cache", pom)
    assert sorted(p.name for p in lib_dir.iterdir()) == [
        f"kafka_2.13-{KAFKA_VERSION}.jar",
        "scala-library.jar",
    ]
    (bin_dir / "mvn").unlink()
    assert ensure_kafka(tmp_path / "cache", pom) == lib_dir
