"""Manifests and folders into items; bad rows are problems, not crashes."""

from __future__ import annotations

import json

import pytest

from reelsim.errors import UsageError
from reelsim.storage.layout import StoreLayout
from reelsim.storage.manifest import read_inputs


def test_jsonl_manifest_resolves_paths_and_reports_bad_rows(tmp_path):
    (tmp_path / "sub").mkdir()
    m = tmp_path / "sub" / "cat.jsonl"
    m.write_text("\n".join([
        json.dumps({"id": "a", "video": "a.mp4", "title": "A"}),
        json.dumps({"image": "p.png", "title": "product p"}),
        json.dumps({"id": "x", "colour": "red"}),
        "{not json",
        json.dumps({"id": "a", "video": "other.mp4"}),
        json.dumps({"id": "t", "title": "text only"}),
    ]) + "\n", encoding="utf-8")
    items, problems = read_inputs([str(m)])
    assert [i.id for i in items] == ["a", "p", "t"]
    assert items[0].video == str((tmp_path / "sub" / "a.mp4").resolve())
    assert items[1].kind == "product" and items[1].text == "product p"
    reasons = {p.id: p.reason for p in problems}
    assert "unknown field" in reasons["cat.jsonl:3"]
    assert "not valid JSON" in reasons["cat.jsonl:4"]
    assert "duplicate id 'a': already used by cat.jsonl:1" in reasons["cat.jsonl:5"]


def test_csv_manifest_and_folder(tmp_path):
    (tmp_path / "clip one.mp4").write_bytes(b"")
    (tmp_path / "shoe.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    m = tmp_path / "c.csv"
    m.write_text("id,video,image,title,description\nv1,clip one.mp4,,Clip,\n,,,,\n", encoding="utf-8")
    items, problems = read_inputs([str(m), str(tmp_path)])
    ids = [i.id for i in items]
    assert ids[0] == "v1" and "shoe" in ids and "notes" not in ids
    assert "clip one" in ids  # folder ids come from file stems
    assert len(problems) == 1 and "no video, image" in problems[0].reason  # the empty csv row


def test_unknown_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        read_inputs([str(tmp_path / "nope.jsonl")])


@pytest.mark.parametrize("item_id", ["../../etc/passwd", "a/b", "/abs", "..", "é 東京"])
def test_ids_never_make_paths_outside_the_store(tmp_path, item_id):
    p = StoreLayout(tmp_path).shard(item_id).resolve()
    assert p.is_relative_to(tmp_path.resolve() / "shards")
    assert p.name.endswith(".h5") and len(p.name) == 35
