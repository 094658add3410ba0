"""minillama/files.py: outputs are written whole or not at all, with the permissions
a plain open() would give, and bad output paths fail before any work."""
import os
import stat

import pytest

from conftest import disk_full_on

from minillama.errors import MinillamaError
from minillama.files import atomic_write, atomic_write_text, check_writable


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), broken)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_new_files_get_the_umask_permissions_even_from_private_writers(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this umask

    def private(tmp):  # like safetensors' save_file, which creates its file 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    atomic_write(str(tmp_path / "private.bin"), private)
    atomic_write_text(str(tmp_path / "text.txt"), "x")
    assert _mode(tmp_path / "private.bin") == _mode(plain)
    assert _mode(tmp_path / "text.txt") == _mode(plain)


def test_saved_adapter_files_are_readable_like_any_output(tmp_path):
    from conftest import tiny_model
    from minillama.adapters import PrefixConfig, attach, save_adapter
    save_adapter(attach(tiny_model(), PrefixConfig(length=2)), str(tmp_path / "a"))
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(tmp_path / "a.safetensors") == _mode(plain) == _mode(tmp_path / "a.json")


def test_check_writable_names_the_flag_and_the_problem(tmp_path):
    with pytest.raises(MinillamaError, match=r"--dev_out: cannot write .*does not exist"):
        check_writable(str(tmp_path / "missing" / "x.txt"), "--dev_out")
    with pytest.raises(MinillamaError, match="is a directory"):
        check_writable(str(tmp_path))
    check_writable(None)
    check_writable(str(tmp_path / "fine.txt"))


def test_resolve_repo_path_falls_back_to_the_repository_root(tmp_path, monkeypatch):
    """Run from another directory, the repository's own files are found; a file present
    here wins, and absolute or absent paths come back unchanged."""
    from conftest import REPO_ROOT
    from minillama.files import resolve_repo_path

    monkeypatch.chdir(tmp_path)
    assert resolve_repo_path("README.md") == os.path.join(REPO_ROOT, "README.md")
    (tmp_path / "README.md").write_text("mine")
    assert resolve_repo_path("README.md") == "README.md"
    assert resolve_repo_path("no_such_file.pt") == "no_such_file.pt"
    absolute = str(tmp_path / "absent.pt")
    assert resolve_repo_path(absolute) == absolute


def test_check_distinct_paths_refuses_same_file(tmp_path):
    import pytest as _pytest
    from minillama.errors import MinillamaError
    from minillama.files import check_distinct_paths
    dev = tmp_path / "mydev.txt"
    dev.write_text("0 ||| a\n")
    before = dev.read_bytes()
    with _pytest.raises(MinillamaError, match=r"--dev and --dev_out name the same file"):
        check_distinct_paths({"--dev": str(dev), "--dev_out": str(tmp_path / "sub" / ".." / "mydev.txt")})
    assert dev.read_bytes() == before
    with _pytest.raises(MinillamaError, match=r"--mmlu_out and --save_adapter \(.json\)"):
        check_distinct_paths({"--mmlu_out": str(tmp_path / "m.json"),
                              "--save_adapter (.json)": str(tmp_path / "m") + ".json"})
    check_distinct_paths({"--dev": str(dev), "--dev_out": str(tmp_path / "out.txt"), "--log_jsonl": None})


def test_a_full_disk_in_a_group_lands_none_of_its_files(tmp_path, monkeypatch):
    from minillama.files import atomic_write_group, contents, start_run
    start_run()
    (tmp_path / "b.json").write_text("older b")
    atomic_write_text(str(tmp_path / "log.txt"), "written before")
    disk_full_on(monkeypatch, "b.json.tmp")
    with pytest.raises(MinillamaError) as e:
        atomic_write_group([(str(tmp_path / "a.bin"), contents(b"12345678")),
                            (str(tmp_path / "b.json"), contents("{}"))])
    assert str(e.value) == (f"no space left on device writing {tmp_path / 'a.bin'} and {tmp_path / 'b.json'}: "
                            f"none of them was written and no partial file remains (the older "
                            f"{tmp_path / 'b.json'} untouched); kept from this run: {tmp_path / 'log.txt'}; "
                            f"free some space and run again")
    assert sorted(os.listdir(tmp_path)) == ["b.json", "log.txt"] and (tmp_path / "b.json").read_text() == "older b"


def test_another_failure_in_a_group_is_not_called_a_full_disk(tmp_path):
    from minillama.files import atomic_write_group, contents

    def broken(tmp):
        raise OSError(5, "Input/output error", tmp)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_group([(str(tmp_path / "a.txt"), contents("a")), (str(tmp_path / "b.txt"), broken)])
    assert os.listdir(tmp_path) == []


def test_an_output_directory_is_checked_before_any_work(tmp_path):
    from minillama.files import check_output_dir
    check_output_dir(None, "--export_peft", "the PEFT adapter", "adapter_config.json")  # not asked for
    check_output_dir(str(tmp_path / "new"), "--export_peft", "the PEFT adapter", "adapter_config.json")
    check_output_dir(str(tmp_path), "--export_peft", "the PEFT adapter", "adapter_config.json")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MinillamaError) as e:
        check_output_dir(str(tmp_path / "f"), "--export_adapterhub", "the AdapterHub adapter", "adapter_config.json")
    assert str(e.value) == (f"--export_adapterhub: {tmp_path / 'f'} is a file; give a directory to write the "
                            "AdapterHub adapter into")
    with pytest.raises(MinillamaError, match=r"^--export_peft: cannot write .*/missing/deeper: directory .*missing "
                                             r"does not exist"):
        check_output_dir(str(tmp_path / "missing" / "deeper"), "--export_peft", "the PEFT adapter", "adapter_config.json")
    assert not (tmp_path / "new").exists()
