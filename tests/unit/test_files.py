"""The local store's helpers for addressing code by its content."""

from __future__ import annotations

from mlops_core.files import content_hash, named_files


def test_a_tree_hashes_by_its_sources_not_by_compiled_caches(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text("print('train')\n")
    before = content_hash(tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\x00compiled")
    assert [name for name, _ in named_files(tmp_path)] == ["pkg/train.py"]
    assert content_hash(tmp_path) == before
    (tmp_path / "pkg" / "train.py").write_text("print('changed')\n")
    assert content_hash(tmp_path) != before


def test_a_single_file_is_named_by_its_own_name(tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text("x = 1\n")
    assert named_files(script) == [("evaluate.py", script)]
