"""The docs stand alone: nothing points outside the repository, links resolve, sources are cited."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Reference material some of the project was built from lives beside the repository, where users do
# not have it: what they need is in docs/, so nothing may point there.
OUTSIDE = re.compile(r"\.\./shared/|/work/shared|\bshared/(bench|hooks)/|statsig-wire\.md|"
                     r"statsig-captured-|\bscenarios\.md|\"shared\" */")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = tracked_files()
    assert len(files) > 50
    found = []
    for path in files:
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "point to docs/ instead:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for() -> None:
    for line in ("see ../shared/statsig-wire.md", 'GEN = ROOT.parent / "shared" / "bench"',
                 "from `shared/bench/gen_events.py`", "/work/shared/bench/gen_events.py"):
        assert OUTSIDE.search(line), line
    for line in ("see docs/statsig-protocol.md", "pages shared between fork and exec", "the shared volume"):
        assert not OUTSIDE.search(line), line


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.glob("*.md"))]


def test_relative_links_and_docs_paths_resolve() -> None:
    missing = []
    for md in markdown_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (md.parent / target).exists():
                missing.append(f"{md.relative_to(ROOT)} -> {target}")
    # docs/ named in code comments, tests, config and deploy files
    for path in tracked_files():
        if path.suffix in (".py", ".md", ".toml", ".yaml", ".yml", ".json", ".sh") and path.is_file():
            for name in set(re.findall(r"\bdocs/([\w.-]+\.md)\b", path.read_text())):
                if not (DOCS / name).exists():
                    missing.append(f"{path.relative_to(ROOT)} -> docs/{name}")
    assert not missing, missing


def test_every_doc_is_indexed_and_cites_dated_public_sources() -> None:
    index = (DOCS / "README.md").read_text()
    docs = [p for p in sorted(DOCS.glob("*.md")) if p.name != "README.md"]
    assert {p.name for p in docs} >= {"statsig-protocol.md", "statsig-rules.md", "sdk-relay.md", "fake-statsig.md",
                                      "log-shippers.md"}
    for doc in docs:
        text = doc.read_text()
        assert f"]({doc.name})" in index, doc.name
        assert re.search(r"https://(github\.com/statsig-io|docs\.statsig\.com|github\.com/)", text), doc.name
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{doc.name}: say when the source was checked"
    rules = (DOCS / "statsig-rules.md").read_text()
    assert "guides/logging-events.mdx" in rules and "https://docs.statsig.com/guides/logging-events" in rules
    readme = (ROOT / "README.md").read_text()
    for name in ("statsig-rules.md", "sdk-relay.md"):
        assert f"(docs/{name})" in readme, name


def test_bench_event_generator_writes_the_peer_figures_shape(tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_events.py"), "1000", str(out)], check=True, timeout=60)
    data = out.read_bytes()
    lines = data.splitlines()
    assert len(lines) == 1000 and 170 <= len(data) / 1000 <= 210
    first = json.loads(lines[0])
    assert set(first) == {"event_name", "user", "value", "time", "metadata"} and first["metadata"]["seq"] == 0
    again = tmp_path / "again.ndjson"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_events.py"), "1000", str(again)], check=True, timeout=60)
    assert again.read_bytes() == data  # deterministic: figures on it can be compared
