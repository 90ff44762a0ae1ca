"""What the per-node path check asks each node (the Ray part runs in tests/integration/test_separate_hosts.py)."""

from __future__ import annotations

import os

import pytest

from pipeline.node_checks import NeededPath, needed_paths, path_problem


def test_needed_paths_of_a_folder_a_file_a_glob_and_the_model(tmp_path):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "a.tif").write_bytes(b"")
    model = tmp_path / "ckpt"
    assert needed_paths(str(tmp_path / "scenes"), None) == (
        NeededPath("SOURCE", str(tmp_path / "scenes"), is_dir=True),
    )
    assert needed_paths(str(tmp_path / "scenes" / "a.tif"), None)[0].is_dir is False
    # a glob: the folder it lists (its matches are known on the driver only)
    assert needed_paths(str(tmp_path / "scenes" / "**" / "*.tif"), str(model)) == (
        NeededPath("SOURCE", str(tmp_path / "scenes"), is_dir=True),
        NeededPath("--model", str(model), is_dir=True, files=("meta.json",)),
    )


def test_needed_paths_are_absolute_as_the_listing_makes_them(tmp_path, monkeypatch):
    (tmp_path / "scenes").mkdir()
    monkeypatch.chdir(tmp_path)
    assert needed_paths("scenes", "ckpt")[0].path == str(tmp_path / "scenes")
    assert needed_paths("scenes", "ckpt")[1].path == str(tmp_path / "ckpt")


@pytest.mark.parametrize(
    "source", ["s3://bucket/scenes/", "S3://bucket/x.tif", "https://host/x.tif", "/vsicurl/x"]
)
def test_remote_sources_need_nothing_on_the_nodes(source):
    assert needed_paths(source, None) == ()


def test_path_problem(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert path_problem(NeededPath("--model", str(folder), is_dir=True, files=("meta.json",))) == (
        "has no readable meta.json"
    )
    (folder / "meta.json").write_text("{}")
    assert path_problem(NeededPath("--model", str(folder), is_dir=True, files=("meta.json",))) is None
    assert path_problem(NeededPath("SOURCE", str(folder / "meta.json"), is_dir=True)) == "is not a folder"
    assert path_problem(NeededPath("SOURCE", str(folder), is_dir=False)) == "is not a file"
    assert path_problem(NeededPath("SOURCE", str(tmp_path / "gone"), is_dir=True)) == "does not exist"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_folder_is_a_problem(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir(mode=0o000)
    try:
        assert path_problem(NeededPath("SOURCE", str(folder), is_dir=True)) == "is not readable"
    finally:
        folder.chmod(0o700)


def test_only_alive_nodes_that_can_work_are_asked():
    from pipeline.node_checks import _node_name, _working_nodes

    nodes = [
        {
            "NodeID": "head0000000000ff",
            "Alive": True,
            "Resources": {"CPU": 0.0},
            "NodeManagerAddress": "10.0.0.1",
        },
        {
            "NodeID": "cpu00000000000ff",
            "Alive": True,
            "Resources": {"CPU": 1.0},
            "NodeManagerAddress": "10.0.0.2",
        },
        {
            "NodeID": "gpu00000000000ff",
            "Alive": True,
            "Resources": {"GPU": 1.0},
            "NodeManagerAddress": "10.0.0.3",
        },
        {
            "NodeID": "dead0000000000ff",
            "Alive": False,
            "Resources": {"CPU": 4.0},
            "NodeManagerAddress": "10.0.0.4",
        },
    ]
    assert [n["NodeID"][:3] for n in _working_nodes(nodes)] == ["cpu", "gpu"]
    assert _node_name(nodes[1]) == "node 10.0.0.2 (id cpu000000000)"
