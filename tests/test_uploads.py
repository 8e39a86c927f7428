"""Upload selection with git's ignore rules (pathspec) and the large-upload notice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.uploads import LARGE_UPLOAD_BYTES, is_uploaded, plan_upload, select_files


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def test_slash_pattern_is_anchored_to_its_directory(tmp_path):
    _tree(tmp_path, ["docs/a.md", "docs/sub/deep.md", "docs/b.txt", "x.md"])
    (tmp_path / ".gitignore").write_text("docs/*.md\n")
    got = select_files(tmp_path)
    assert "docs/sub/deep.md" in got and "docs/a.md" not in got  # fnmatch dropped deep.md too
    assert {"docs/b.txt", "x.md", ".gitignore"} <= set(got)


def test_escaped_names_and_negation(tmp_path):
    _tree(tmp_path, ["#notes", "!bang", "a.log", "keep.log", "logs/x.txt", "logs/keep.txt"])
    (tmp_path / ".gpujobignore").write_text("\\#notes\n\\!bang\n*.log\n!keep.log\n")
    got = set(select_files(tmp_path))
    assert "#notes" not in got and "!bang" not in got and "a.log" not in got
    assert "keep.log" in got
    # a file inside an ignored directory cannot be re-included (git never enters it)
    (tmp_path / ".gpujobignore").write_text("logs/\n!logs/keep.txt\n")
    assert not {p for p in select_files(tmp_path) if p.startswith("logs/")}


def test_nested_gitignore_and_precedence(tmp_path):
    _tree(tmp_path, ["pkg/model.py", "pkg/cache.bin", "data/raw.bin", "data/small.csv", "top.bin"])
    (tmp_path / ".gitignore").write_text("*.bin\n")
    (tmp_path / "pkg/.gitignore").write_text("!cache.bin\n")  # deeper file wins, relative to pkg/
    (tmp_path / ".gpujobignore").write_text("data/\n")  # .gpujobignore beside .gitignore: later wins
    got = set(select_files(tmp_path, ["*.py"]))  # payload.ignore: lowest precedence
    assert got == {".gitignore", ".gpujobignore", "pkg/.gitignore", "pkg/cache.bin"}


def test_same_choice_as_git(tmp_path):
    """The selection equals `git ls-files --others --exclude-standard` on the same tree."""
    files = ["a/b/c.md", "a/c.md", "docs/x.md", "docs/y/z.md", "build/out.o", "src/build/keep.o",
             "src/m.py", "weird name.txt", "#hash", "n/!x", "deep/a/b/c/d.tmp"]
    _tree(tmp_path, files)
    (tmp_path / ".gitignore").write_text("docs/*.md\n/build/\n*.tmp\n\\#hash\n**/b/c.md\nn/\\!x\n!deep/a/b/c/d.tmp\n")
    (tmp_path / "src/.gitignore").write_text("*.o\n!keep.o\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = subprocess.run(["git", "-C", str(tmp_path), "ls-files", "--others", "--exclude-standard", "-z"],
                         check=True, capture_output=True).stdout.decode()
    assert sorted(select_files(tmp_path, [".git"])) == sorted(p for p in out.split("\0") if p)


def test_is_uploaded_says_of_one_file_what_the_selection_says(tmp_path):
    """is_uploaded (the spec's check of a model file) reads only the folders on the file's path
    and agrees with select_files on every file of a tree with nested and negated rules."""
    files = ["pkg/model.py", "pkg/cache.bin", "data/raw.bin", "data/small.csv", "top.bin", "logs/keep.txt",
             "a/b/c.md", "docs/x.md", "docs/y/z.md", "keep.log", "a.log"]
    _tree(tmp_path, files)
    (tmp_path / ".gitignore").write_text("*.bin\ndocs/*.md\n**/b/c.md\n")
    (tmp_path / "pkg/.gitignore").write_text("!cache.bin\n")
    (tmp_path / ".gpujobignore").write_text("data/\nlogs/\n!logs/keep.txt\n*.log\n!keep.log\n")
    for ignore in ([], ["*.py"]):
        chosen = set(select_files(tmp_path, ignore))
        assert {f for f in files if is_uploaded(tmp_path, f, ignore)} == chosen & set(files), ignore


def test_plan_upload_reports_size_largest_and_rules(tmp_path):
    _tree(tmp_path, ["train.py", "notes.txt"])
    with open(tmp_path / "data.bin", "wb") as fh:  # sparse: no real disk used
        fh.truncate(LARGE_UPLOAD_BYTES + 1)
    (tmp_path / ".gitignore").write_text("notes.txt\n")
    plan = plan_upload(tmp_path)
    assert plan.large and plan.largest[0] == ("data.bin", LARGE_UPLOAD_BYTES + 1)
    assert set(plan.files) == {"train.py", "data.bin", ".gitignore"}
    line = plan.describe("the working directory is the payload")
    assert "100.0 MB in 3 files" in line and "data.bin" in line and ".gitignore" in line
    assert "working directory" in line and ".gpujobignore" in line
    (tmp_path / ".gpujobignore").write_text("*.bin\n")
    assert not plan_upload(tmp_path).large


@pytest.mark.parametrize("pattern, path, ignored", [
    ("*.log", "a/b/c.log", True), ("/top.txt", "sub/top.txt", False), ("foo/**/bar", "foo/x/y/bar", True),
    ("a?c", "abc", True), ("[ab].txt", "c.txt", False), ("trailing\\ ", "trailing ", True),
])
def test_gitignore_pattern_table(tmp_path, pattern, path, ignored):
    _tree(tmp_path, [path])
    assert (path not in select_files(tmp_path, [pattern])) is ignored


def test_cli_run_prints_the_large_upload_notice(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import launcher.uploads as uploads
    from launcher.cli import app

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(uploads, "LARGE_UPLOAD_BYTES", 10_000)  # the real threshold is 100 MB
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    (proj / "job.py").write_text("print('hello from job')\n")
    (proj / "weights.pt").write_bytes(b"w" * 30_000)
    (proj / "job.yaml").write_text("name: big\npayload: {entrypoint: job.py}\n")
    res = CliRunner().invoke(app, ["run", "job.yaml", "--no-baseline"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "large upload: uploading" in text and "weights.pt" in text
    assert text.index("large upload") < text.index("hello from job")
