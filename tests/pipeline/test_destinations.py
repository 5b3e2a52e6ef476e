"""Output destinations checked before the job: prefixes whose files would collide, an `--input` that would read
the job's own outputs, and what an earlier run left under the same prefixes (refused, or removed with
--overwrite; temporary leftovers always removed)."""

import json

import pytest

from pipeline import UsageError, run
from tests.support.cli import run_job


def _job(tmp_path, longclip_checkpoint, *extra):
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "in.jsonl").write_text('{"id": 1, "text": "a cat"}\nnot json\n')
    out = str(tmp_path / "out" / "scored")
    return ["--input", str(tmp_path / "in" / "*.jsonl"), "--output", out, "--model", str(longclip_checkpoint), *extra]


def test_prefixes_whose_files_collide_are_refused_before_anything_runs(tmp_path, longclip_checkpoint):
    """Each used to run with exit 0, one destination's files overwriting the other's."""
    out = str(tmp_path / "out" / "scored")
    keep = ["--keep_min_score", "0.5"]
    cases = [
        (["--dead_letter", out], f"--dead_letter {out!r} and --output {out!r} write the same files"),
        ([*keep, "--rejected_output", out], f"--rejected_output {out!r} and --output {out!r} write the same files"),
        (
            [*keep, "--rejected_output", f"{out}.dead_letter"],
            f"--rejected_output {out + '.dead_letter'!r} and --dead_letter (default <output>.dead_letter) write",
        ),
        (["--dead_letter", out, "--resume"], "--dead_letter"),
        (["--dead_letter", f"{out}-rejects"], f"--output's {out + '-*'!r} also matches the files of --dead_letter"),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError) as caught:
            run(_job(tmp_path, longclip_checkpoint, *extra))
        assert message in str(caught.value) and "\n" not in str(caught.value), (extra, str(caught.value))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_input_glob_that_matches_the_jobs_own_outputs_is_refused(tmp_path, longclip_checkpoint):
    (tmp_path / "captions.jsonl").write_text('{"text": "a cat"}\n')
    argv = ["--input", str(tmp_path / "*.jsonl"), "--output", str(tmp_path / "scored")]
    with pytest.raises(UsageError, match=r"^--input .* also matches the files --output writes \(.*scored-00000-of"):
        run(argv + ["--model", str(longclip_checkpoint)])
    # On the command line: exit 2 and one line.
    done = run_job(*argv, "--model", str(longclip_checkpoint), timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "error: --input " in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_rerun_refuses_earlier_outputs_and_overwrite_removes_only_those(tmp_path, longclip_checkpoint):
    """A rerun used to leave the earlier run's shards beside its own, counted twice by `out/scored-*`."""
    argv = _job(tmp_path, longclip_checkpoint)
    run(argv)
    out = tmp_path / "out"
    (out / "scored-00001-of-00002.jsonl").write_text('{"id": "old"}\n')  # an earlier run with two shards
    (out / "scored.dead_letter-part-0123456789abcdef0123.jsonl").write_text("{}\n")  # and one with --resume
    foreign = [out / "scored-notes.txt", out / "other.jsonl", out / "scored-00000-of-00001.json"]
    for path in foreign:
        path.write_text("mine\n")
    with pytest.raises(UsageError, match=r"^--output: .*scored-0000[01]-of-0000[12].jsonl is from an earlier run"):
        run(argv)
    leftovers = [out / f"beam-temp-scored-{'a' * 32}" / "x.scored.jsonl"]
    leftovers.append(out / f".tmp-{'b' * 12}-scored-part-{'c' * 20}.jsonl")
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_text("{}\n")
    run(argv + ["--overwrite"])
    scored = [json.loads(line) for path in out.glob("scored-*.jsonl") for line in path.open()]
    assert [record["id"] for record in scored] == [1]
    assert len(list(out.glob("scored.dead_letter-*"))) == 1
    assert all(path.read_text() == "mine\n" for path in foreign)  # not of the job's own naming: kept
    assert not any(path.exists() for path in leftovers) and not leftovers[0].parent.exists()
