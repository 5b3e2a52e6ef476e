"""The job's own file names under a prefix: what `find` counts as an earlier run's outputs, what as leftovers,
and that nothing else is ever touched."""

from pipeline.io import outputs


def test_find_sorts_the_jobs_own_files_from_leftovers_and_leaves_the_rest(tmp_path):
    prefix = str(tmp_path / "scored")
    part = "0123456789abcdef0123"
    own = {
        "shards": [
            "scored-00000-of-00002.jsonl",
            "scored-00001-of-00002.parquet",
            "scored-20261206T101500Z-20261206T101510Z-00000-of-00001.jsonl",
            "scored-00003.tar",
        ],
        "parts": [f"scored-part-{part}.jsonl"],
        "manifests": ["scored.resume/job.json", f"scored.resume/part-{part}.json"],
        "leftovers": [f".tmp-{'b' * 12}-scored-part-{part}.jsonl", f"scored.resume/.tmp-{'c' * 12}-job.json"],
    }
    # Temporary folders are leftovers as a whole, files in them or not (a failed job may leave them empty).
    folders = [f"beam-temp-scored-{'a' * 32}", f"beam-temp-scored-{'d' * 32}", f"scored.resume/staging-{part}"]
    others = [
        "scored-notes.txt",
        "scored.dead_letter-00000-of-00001.jsonl",  # another prefix's
        f"beam-temp-scored.dead_letter-{'a' * 32}/x.jsonl",
        f".tmp-{'b' * 12}-other-part-{part}.jsonl",
        "scoredX-00000-of-00001.jsonl",
        "scored-part-xyz.jsonl",
    ]
    for name in [name for names in own.values() for name in names] + others:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    for name in folders:
        (tmp_path / name).mkdir(parents=True)
    for name in (folders[0] + "/x.scored.jsonl", folders[2] + "/scored-1.jsonl"):
        (tmp_path / name).write_text("x")
    found = outputs.find(prefix)
    own["leftovers"] += folders
    for kind, names in own.items():
        assert sorted(getattr(found, kind)) == sorted(str(tmp_path / name) for name in names), kind
    outputs.remove(found.outputs + found.leftovers)
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == sorted(others)
    assert not any((tmp_path / name).exists() for name in folders) and not (tmp_path / "scored.resume").exists()


def test_example_names_are_the_jobs_own():
    for name in outputs.examples("out/scored"):
        assert outputs.is_output_of(name, "out/scored"), name
        assert not outputs.is_output_of(name, "out/score")
    assert outputs.glob_matches("out/*.jsonl", "out/scored-00000-of-00001.jsonl")
    assert not outputs.glob_matches("out/*.jsonl", "out/sub/scored-00000-of-00001.jsonl")
    assert outputs.glob_matches("out/**", "out/sub/scored-00000-of-00001.jsonl")


def test_a_bare_prefix_in_the_working_directory_is_listed(tmp_path, monkeypatch):
    """Beam lists a local glob from its folder, and `scored-**` has none: such outputs went unseen."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scored-00000-of-00001.jsonl").write_text("{}\n")
    (tmp_path / "scored.resume").mkdir()
    (tmp_path / "scored.resume" / "job.json").write_text("{}")
    found = outputs.find("scored")
    assert (found.shards, found.manifests) == (("scored-00000-of-00001.jsonl",), ("scored.resume/job.json",))


def test_an_earlier_runs_files_on_gcs_are_found_and_removed(gcs_bucket):
    names = ["o/scored-00000-of-00001.jsonl", f"o/beam-temp-scored-{'a' * 32}/x.jsonl", "o/scored-notes.txt"]
    for name in names:
        gcs_bucket.blob(name).upload_from_string("{}\n")
    found = outputs.find(f"gs://{gcs_bucket.name}/o/scored")
    assert (found.shards, found.leftovers) == (
        (f"gs://{gcs_bucket.name}/{names[0]}",),
        (f"gs://{gcs_bucket.name}/{names[1]}",),
    )
    outputs.remove(found.outputs + found.leftovers)
    assert [blob.name for blob in gcs_bucket.list_blobs(prefix="o/")] == ["o/scored-notes.txt"]
