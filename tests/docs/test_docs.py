"""README.md and docs/*.md: every fenced block is run here as written, or marked as needing what a test cannot
have; every link resolves. The markers (docs/layout.md, "How these pages are tested"), one on the line before
each fenced block:

    <!-- test: NAME -->      a test below runs the block as written and checks what it did
    <!-- needs: cloud -->    a GCP project, credentials, buckets
    <!-- needs: network -->  downloads (the Hugging Face Hub, PyPI, datasets)
    <!-- needs: gpu -->      a GPU
    <!-- needs: time -->     minutes: the whole suite, the benchmarks
    <!-- output -->          not a command: sample output, a diagram

Bash blocks run with `bash -e`, Python blocks with this Python, in a folder of their own (or a copy of the
repository, for `make`), with this checkout first on PYTHONPATH. The default model, the Hub's
`BeichenZhang/LongCLIP-L-336px`, is served offline from a Hugging Face cache that holds a tiny random
checkpoint under that id, as `hf download` leaves it: the commands run as written, the download is skipped.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import pytest

from tests.support.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
EXAMPLES = REPO_ROOT / "examples"
EXAMPLE = EXAMPLES / "score_in_your_pipeline.py"
DEFAULT_MODEL = "BeichenZhang/LongCLIP-L-336px"

NEEDS = ("cloud", "network", "gpu", "time")
MARKER = re.compile(r"<!-- (?:test: (?P<test>[a-z0-9][a-z0-9-]*)|needs: (?P<needs>[a-z]+)|(?P<output>output)) -->")
LOOKS_LIKE_MARKER = re.compile(r"^\s*<!--\s*(test|needs|output)\b")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```|~~~)(?P<lang>[\w+-]*)\s*$")


class Block(NamedTuple):
    page: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    marker: Optional[str]  # the line before the fence, when it looks like a marker

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def test(self) -> Optional[str]:
        found = MARKER.fullmatch(self.marker or "")
        return found and found["test"]


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, start = [], None
    for number, line in enumerate(lines):
        fence = FENCE.match(line)
        if start is None and fence:
            start, indent, lang = number, len(fence["indent"]), fence["lang"]
        elif start is not None and fence and fence["lang"] == "":
            before = lines[start - 1].strip() if start else ""
            text = "".join(body[indent:] + "\n" for body in lines[start + 1 : number])
            found.append(Block(page, start + 1, lang, text, before if LOOKS_LIKE_MARKER.match(before) else None))
            start = None
    assert start is None, f"{page.relative_to(REPO_ROOT)}:{start + 1}: a fence that never closes"
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def block(name: str) -> Block:
    (named,) = [block for block in all_blocks() if block.test == name]
    return named


def block_after(name: str) -> Block:
    """The block right after the one named `name` on its page (its sample output)."""
    named = block(name)
    page = blocks(named.page)
    return page[page.index(named) + 1]


# Every `test:` name a test below runs; a name in the pages without a test here (or the reverse) fails.
RUN_HERE: set[str] = set()


def runs(*names: str) -> Callable:
    RUN_HERE.update(names)
    return lambda test: test


# ---- the markers, the names, the links ---------------------------------------------------------------------


def test_every_block_has_exactly_one_marker():
    problems = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        fences = {block.line - 1 for block in blocks(page)}
        for found in blocks(page):
            before = lines[found.line - 2].strip() if found.line > 1 else ""
            if not MARKER.fullmatch(before):
                problems.append(f"{found.where}: no marker on the line before the block (got {before!r})")
            elif found.line > 2 and LOOKS_LIKE_MARKER.match(lines[found.line - 3]):
                problems.append(f"{found.where}: two markers before the block")
            elif MARKER.fullmatch(before)["needs"] not in (None, *NEEDS):
                problems.append(f"{found.where}: {before}: needs one of {', '.join(NEEDS)}")
        for number, line in enumerate(lines):
            if LOOKS_LIKE_MARKER.match(line) and number + 1 not in fences:
                problems.append(f"{page.relative_to(REPO_ROOT)}:{number + 1}: a marker that no block follows")
    assert not problems, "\n".join(problems)


def test_every_test_name_is_run_here_once():
    names = [found.test for found in all_blocks() if found.test]
    assert len(names) == len(set(names)), f"names used twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert set(names) - RUN_HERE == set(), "blocks marked `test:` that no test here runs"
    assert RUN_HERE - set(names) == set(), "tests here for blocks that are no longer in the pages"


def github_anchor(heading: str) -> str:
    """The anchor GitHub makes from a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())  # punctuation (`, :, /, ', …) goes, \w stays
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    outside_code = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.DOTALL | re.MULTILINE)
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", outside_code, flags=re.MULTILINE):
        anchor = github_anchor(heading)
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return found | set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    found, in_code = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
        if not in_code:
            prose = re.sub(r"`[^`]*`", "", line)
            found += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", prose)]
    return found


def test_every_relative_link_and_anchor_resolves():
    problems = []
    for page in [*PAGES, REPO_ROOT / "CHANGELOG.md"]:
        for number, target in links(page):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO_ROOT)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                problems.append(f"{where}: no such anchor in {linked.name}")
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    readme = {(REPO_ROOT / target.partition("#")[0]).resolve() for _, target in links(REPO_ROOT / "README.md")}
    missing = [page.name for page in PAGES[1:] if page.resolve() not in readme]
    assert not missing, f"docs pages the README does not link to: {missing}"


def commands(text: str) -> list[list[str]]:
    """The commands of a shell block, one argv per command line (continuations joined, comments dropped)."""
    found, heredoc = [], None
    for line in text.replace("\\\n", " ").splitlines():
        if heredoc is not None:  # a heredoc's lines are its command's input, not commands
            heredoc = None if line == heredoc else heredoc
            continue
        opened = re.search(r"<<-?\s*'?(\w+)'?", line)
        heredoc = opened and opened[1]
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # a quote that spans lines
            continue
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the command
            words = words[1:]
        ends = [at for at, word in enumerate(words) if word in ("&", "&&", ";", "|", "||")]
        words = words[: ends[0]] if ends else words
        if words:
            found.append(words)
    return found


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w.-]+):(?!=)", text, flags=re.MULTILINE))


def test_every_command_names_what_exists():
    """Blocks that are not run here are still checked: their `make` targets, scripts and `python -m` modules
    exist, and `python -m pipeline`'s flags parse (`pipeline.parse`: the job's and Beam's, values and
    combinations, without the environment)."""
    from pipeline import UsageError, parse

    targets, problems = makefile_targets(), []
    for found in all_blocks():
        if found.lang not in ("bash", "sh"):
            continue
        for argv in commands(found.text):
            if argv[0] == "make":
                named = [arg for arg in argv[1:] if "=" not in arg and not arg.startswith("-")]
                problems += [f"{found.where}: no make target {target!r}" for target in named if target not in targets]
            if "/" in argv[0] and not argv[0].startswith("/") and not (REPO_ROOT / argv[0]).exists():
                problems.append(f"{found.where}: no {argv[0]} here")
            if argv[0].endswith("python") and argv[1:2] == ["-m"]:
                module = argv[2]
                files = [REPO_ROOT / (module.replace(".", "/") + suffix) for suffix in (".py", "/__main__.py")]
                if not any(file.exists() for file in files):
                    problems.append(f"{found.where}: no module {module} here")
                if module == "pipeline" and not found.test and "--help" not in argv:
                    try:
                        parse(argv[3:])
                    except (UsageError, SystemExit) as exc:
                        problems.append(f"{found.where}: {exc}")
    assert not problems, "\n".join(dict.fromkeys(problems))


# ---- what the commands run with --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory, longclip_checkpoint) -> Path:
    """A Hugging Face cache as `hf download BeichenZhang/LongCLIP-L-336px` leaves it, holding a tiny checkpoint."""
    home = tmp_path_factory.mktemp("hf")
    repo = home / "hub" / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    snapshot = repo / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    shutil.copy(longclip_checkpoint, snapshot / "longclip-L@336px.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    return home


def environment(hub_home: Path, root: Path = REPO_ROOT) -> dict:
    """The environment of a user whose shell runs this project's Python, offline, with the Hub cache above."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LONGCLIP_", "MAKE", "MFLAGS"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONPATH=str(root), HF_HOME=str(hub_home), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def run(name: str, cwd: Path, env: dict, *, returncode: int = 0, timeout: float = 300, code: str = ""):
    """Runs the block named `name` as written (Python blocks followed by `code`, the test's own checks)."""
    found = block(name)
    if found.lang == "python":
        argv = [sys.executable, "-c", found.text + code]
    else:
        assert found.lang in ("bash", "sh"), f"{found.where}: cannot run a {found.lang!r} block"
        argv = ["bash", "-e", "-c", found.text]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == returncode, f"{found.where} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def assert_sample_in(sample: Block, log: str) -> None:
    """Each line of a sample output block is a line of `log` (log lines' timestamps aside; … stands for anything)."""
    for line in sample.text.splitlines():
        pattern = re.escape(line).replace("…", ".*")
        assert re.search(rf"(^|\s){pattern}$", log, flags=re.MULTILINE), f"{sample.where}: {line!r} not in:\n{log}"


def write_data(folder: Path) -> Path:
    """`data/captions-0.jsonl` and `data/images/`: the demo's captions, image paths relative to data/images."""
    shutil.copytree(EXAMPLES / "images", folder / "data" / "images")
    lines = []
    for line in (EXAMPLES / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)  # the line that is not JSON stays
            continue
        record["image_path"] = record["image_path"].removeprefix("images/")
        lines.append(json.dumps(record, ensure_ascii=False))
    (folder / "data" / "captions-0.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def read_jsonl(pattern: str, folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob(pattern)) for line in path.read_text().splitlines()]


def reasons(rows: list[dict]) -> dict:
    """id → reason (None when scored)."""
    return {row["id"]: row["longclip_score_reason"] for row in rows}


DEMO_REASONS = {  # the demo's nine records; its tenth line is not JSON
    "sunset-1": None,
    "sunset-2": None,
    "sunset-long": None,
    "house-1": None,
    "house-2": None,
    "light-1": None,
    "checker-1": None,
    "missing-image": "image_not_found",
    "empty-text": "text_empty",
}


def repo_copy(folder: Path) -> Path:
    """A copy of the repository using this one's venvs, for commands that write where they run (`make`).

    The requirement files are made older than the venvs' install stamps, so that `make` takes the venv as
    installed (it is: these tests run in it) instead of reinstalling it, editable, from the copy."""
    copy = folder / "repo"
    ignored = (".git", ".venv", ".venv-*", "__pycache__", ".hypothesis", ".*_cache", "out", "*.egg-info")
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(*ignored), symlinks=True)
    for venv in (".venv", ".venv-bqemulator"):
        if (REPO_ROOT / venv).exists():
            (copy / venv).symlink_to((REPO_ROOT / venv).resolve())
    for name in ("requirements.txt", "requirements-dev.txt", "setup.py", "tests/bqemulator-requirements.txt"):
        os.utime(copy / name, (0, 0))
    return copy


def check_make_runs_no_install(copy: Path, target: str, env: dict) -> None:
    planned = subprocess.run(["make", "-n", target], cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    assert "pip install" not in planned.stdout, (
        f"`make {target}` would install the venv (is {REPO_ROOT / '.venv' / '.installed'} there?):\n{planned.stdout}"
    )


# ---- README.md -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@runs("make-demo")
def test_make_demo(tmp_path, hub_home):
    copy = repo_copy(tmp_path)
    env = environment(hub_home, copy)
    check_make_runs_no_install(copy, "demo", env)
    done = run("make-demo", copy, env)
    scored = read_jsonl("out/demo/scored-*.jsonl", copy)
    assert reasons(scored) == DEMO_REASONS and len(scored) == len(DEMO_REASONS)
    assert [row["id"] for row in scored if row["longclip_score_truncated"]] == ["sunset-long"]
    (dead,) = read_jsonl("out/demo/scored.dead_letter-*.jsonl", copy)
    assert dead["reason"] == "not_json"
    assert_sample_in(block_after("job"), done.stderr)  # the README's sample is this command's log


@pytest.mark.slow
@runs("make-demo-offline")
def test_make_demo_offline_needs_no_hub(tmp_path):
    copy = repo_copy(tmp_path)
    env = environment(tmp_path / "empty-hf-home", copy)
    check_make_runs_no_install(copy, "demo-offline", env)
    run("make-demo-offline", copy, env)
    assert (copy / "out" / "tiny-random-longclip.pt").stat().st_size > 0
    assert reasons(read_jsonl("out/demo-offline/scored-*.jsonl", copy)) == DEMO_REASONS
    assert len(read_jsonl("out/demo-offline/scored.dead_letter-*.jsonl", copy)) == 1


@pytest.mark.slow
@runs("example")
def test_readme_example_is_the_example_file_and_runs_as_written(hub_home):
    assert block("example").text == EXAMPLE.read_text(encoding="utf-8")
    done = subprocess.run(  # `python examples/score_in_your_pipeline.py`, as the README says
        [sys.executable, str(EXAMPLE.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT,
        env=environment(hub_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == 3 and lines[2] == "3 failed: image_not_found", lines
    for line, record_id in zip(lines[:2], ("1", "2"), strict=True):
        printed_id, score = line.split()
        assert printed_id == record_id and 0 < float(score) < 1


@pytest.mark.slow
@runs("job", "report")
def test_the_job_then_its_report(tmp_path, hub_home):
    folder, env = write_data(tmp_path), environment(hub_home)
    run("job", folder, env)
    scored = read_jsonl("out/scored-*.jsonl", folder)
    assert reasons(scored) == DEMO_REASONS
    assert [row["reason"] for row in read_jsonl("out/scored.dead_letter-*.jsonl", folder)] == ["not_json"]

    run("report", folder, env)
    summary = json.loads((folder / "out" / "report" / "summary.json").read_text())
    assert (summary["rows"], summary["scored"], summary["truncated"]) == (9, 7, 1)
    assert summary["failed"] == {"image_not_found": 1, "text_empty": 1}
    assert (folder / "out" / "report" / "report.html").stat().st_size > 10_000


@pytest.mark.slow
@runs("filter")
def test_a_filter(tmp_path, hub_home):
    folder = write_data(tmp_path)
    done = run("filter", folder, environment(hub_home))
    kept = read_jsonl("out/kept-*.jsonl", folder)
    rejected = read_jsonl("out/kept.rejected-*.jsonl", folder)
    assert len(kept) == math.ceil(0.3 * 7) and len(kept) + len(rejected) == 9
    cutoff = {row["longclip_score_cutoff"] for row in rejected}
    assert len(cutoff) == 1 and min(row["longclip_score"] for row in kept) >= cutoff.pop()
    assert len(read_jsonl("out/kept.dead_letter-*.jsonl", folder)) == 1
    assert "Filter: 3 kept, 6 rejected" in done.stderr


# ---- docs/flags.md, docs/library.md, docs/models.md ------------------------------------------------------


@runs("help")
def test_help(tmp_path):
    done = run("help", tmp_path, environment(tmp_path))
    assert "--allowed_image_prefixes" in done.stdout and "--input" in done.stdout


@runs("misspelt-flag")
def test_a_misspelt_flag_is_named_with_the_fix(tmp_path):
    done = run("misspelt-flag", tmp_path, environment(tmp_path), returncode=2)
    assert done.stderr == block_after("misspelt-flag").text


@pytest.mark.slow
@runs("settings")
def test_settings_in_python(hub_home):
    done = run("settings", REPO_ROOT, environment(hub_home))
    assert done.stdout.split() == ["scored"]


@pytest.mark.slow
@runs("without-beam")
def test_scoring_without_beam(hub_home):
    no_beam = "\nimport sys\nassert 'apache_beam' not in sys.modules, 'Beam was imported'"
    done = run("without-beam", REPO_ROOT, environment(hub_home), code=no_beam)
    assert re.fullmatch(r"0\.\d{4} \(whole caption\)\n", done.stdout), done.stdout


@pytest.mark.slow
@runs("long-captions")
def test_long_captions_in_chunks_with_sentence_scores(hub_home):
    done = run("long-captions", REPO_ROOT, environment(hub_home))
    assert done.stdout == "2 chunks, 30 sentences\n", done.stdout


@runs("input-sizes")
def test_input_sizes_from_the_header(tmp_path, hub_home):
    done = run("input-sizes", tmp_path, environment(hub_home))
    assert done.stdout == "InputSizes(image_resolution=32, context_length=248)\n"  # the tiny checkpoint's


# ---- docs/formats.md ---------------------------------------------------------------------------------------


@pytest.mark.slow
@runs("webdataset", "read-parquet")
def test_webdataset_shards_to_parquet_then_read_back(tmp_path, hub_home):
    from transforms.testing.datasets import img2dataset_sample, jpeg, write_shard

    members = img2dataset_sample("000000000", jpeg(EXAMPLES / "images" / "red_house.png"), "A red brick house.")
    members += img2dataset_sample("000000001", jpeg(EXAMPLES / "images" / "sunset_over_sea.jpg"), "A sunset.")
    members += img2dataset_sample("000000002", None, "A sample whose image failed to download.")
    write_shard(tmp_path / "shards" / "00000.tar", members)
    env = environment(hub_home)
    run("webdataset", tmp_path, env)
    done = run("read-parquet", tmp_path, env, code="\nprint(len(rows), len(ok), sorted(rows[0]))")
    count, ok, columns = done.stdout.split(" ", 2)
    assert (count, ok) == ("3", "2")
    assert "'longclip_score_image_embedding'" in columns and "'__key__'" in columns


@pytest.mark.slow
@runs("webdataset-out", "read-shards")
def test_webdataset_shards_to_kept_shards_then_read_back(tmp_path, hub_home):
    from transforms.testing.datasets import img2dataset_sample, jpeg, write_shard

    members = []
    for index, image in enumerate(sorted((EXAMPLES / "images").glob("*.*")) * 2):
        members += img2dataset_sample(f"{index:09d}", jpeg(image), f"Picture {index}, drawn.")
        members.append((f"{index:09d}.seg.png", bytes([index]) * 99))  # a member the job does not read
    write_shard(tmp_path / "shards" / "00000.tar", members)
    env = environment(hub_home)
    run("webdataset-out", tmp_path, env)
    kept = [path.name for path in sorted((tmp_path / "out").glob("kept-*.tar"))]
    rejected = [path.name for path in sorted((tmp_path / "out").glob("kept.rejected-*.tar"))]
    assert (kept, rejected) == (["kept-00000.tar"], ["kept.rejected-00000.tar"])
    done = run("read-shards", tmp_path, env, code="\nprint(json.dumps(scores))")
    scores = json.loads(done.stdout)
    assert len(scores) == 3 and all(0 < score < 1 for score in scores.values())  # 0.3 of 8 samples, rounded up


@pytest.mark.slow
@runs("parquet-urls")
def test_parquet_with_image_urls(tmp_path, hub_home):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.testing.datasets import serve_folder

    with serve_folder(EXAMPLES / "images") as base:
        urls = [f"{base}/red_house.png", f"{base}/sunset_over_sea.jpg", f"{base}/gone.jpg"]
        captions = ["A red brick house.", "A sunset over the sea.", "An image the server no longer has."]
        (tmp_path / "laion").mkdir()
        pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "laion" / "part-00000.parquet")
        run("parquet-urls", tmp_path, environment(hub_home))
    rows = pq.read_table(sorted((tmp_path / "out").glob("laion-*.parquet"))).to_pylist()
    assert [(row["url"].rsplit("/", 1)[1], row["longclip_score_reason"]) for row in rows] == [
        ("red_house.png", None),
        ("sunset_over_sea.jpg", None),
        ("gone.jpg", "image_not_found"),
    ]


@pytest.mark.slow
@runs("parquet-inline")
def test_parquet_with_the_images_inside(tmp_path, hub_home):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [
        {"bytes": (EXAMPLES / "images" / "red_house.png").read_bytes(), "path": "red_house.png"},
        {"bytes": b"not an image", "path": "broken.png"},
    ]
    table = pa.table({"image": pa.array(images, image), "text": ["A red brick house.", "A broken file."]})
    (tmp_path / "my-captions" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "my-captions" / "data" / "train-00000-of-00001.parquet")
    run("parquet-inline", tmp_path, environment(hub_home))
    rows = pq.read_table(sorted((tmp_path / "out").glob("hf-*.parquet"))).to_pylist()
    assert [(row["image"], row["longclip_score_reason"]) for row in rows] == [
        ("red_house.png", None),  # the struct's path; image bytes never reach an output
        ("broken.png", "image_undecodable"),
    ]


# ---- docs/untrusted-inputs.md, docs/reliability.md -----------------------------------------------------------


@pytest.mark.slow
@runs("allowed-prefixes")
def test_allowed_image_prefixes(tmp_path, hub_home):
    folder = write_data(tmp_path)
    outside = [
        {"id": "passwd", "image_path": "/etc/passwd", "text": "A file outside the allowed folder."},
        {"id": "metadata", "image_path": "http://169.254.169.254/latest/meta-data/", "text": "Cloud metadata."},
    ]
    (folder / "data" / "untrusted.jsonl").write_text("".join(json.dumps(record) + "\n" for record in outside))
    run("allowed-prefixes", folder, environment(hub_home))
    found = reasons(read_jsonl("out/confined-*.jsonl", folder))
    assert found == {**DEMO_REASONS, "passwd": "image_not_allowed", "metadata": "image_not_allowed"}


@pytest.mark.slow
@runs("resume", "resume-changed")
def test_resume_the_same_command_twice(tmp_path, hub_home):
    folder = write_data(tmp_path)
    done = run("resume", folder, environment(hub_home))
    assert_sample_in(block_after("resume"), done.stderr)  # the second run reads nothing again
    assert reasons(read_jsonl("out/scored-part-*.jsonl", folder)) == DEMO_REASONS
    assert len(read_jsonl("out/scored.dead_letter-part-*.jsonl", folder)) == 1
    assert not list((folder / "out").glob("*-of-*"))  # part by part, nothing else
    refused = run("resume-changed", folder, environment(hub_home), returncode=2)
    assert refused.stderr.splitlines()[-1] == block_after("resume-changed").text.strip()


@pytest.mark.slow
@runs("rerun", "overwrite")
def test_a_rerun_is_refused_and_overwrite_replaces_the_earlier_outputs(tmp_path, hub_home):
    folder, env = write_data(tmp_path), environment(hub_home)
    run("rerun", folder, env)
    refused = run("rerun", folder, env, returncode=2)
    assert refused.stderr.splitlines()[-1] == block_after("rerun").text.strip()
    done = run("overwrite", folder, env)
    assert_sample_in(block_after("overwrite"), done.stderr)
    assert reasons(read_jsonl("out/scored-*.jsonl", folder)) == DEMO_REASONS


# ---- docs/streaming.md ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.emulator
@runs("streaming-emulators")
def test_streaming_on_the_emulators(tmp_path):
    for port in (8085, 9050):  # the block's fixed ports
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken: the recipe needs it free"
    copy = repo_copy(tmp_path)
    script = block("streaming-emulators").text
    with subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=copy,
        env=environment(tmp_path / "empty-hf-home", copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # whatever the script leaves behind is stopped with its group below
    ) as process:
        try:
            out, err = process.communicate(timeout=240)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == 0, err[-4000:]
    row, run_record = out.splitlines()
    assert row.startswith("Row(('examples/images/red_house.png', 'A red house.', ") and ", None, None, False, " in row
    assert re.fullmatch(r"run \d\d:\d\d:\d\d: done", run_record), run_record  # the drained job wrote its record
