"""noam_plugin/safe_io.py, tried as an attacker would: bombs, deep nesting, special files, pickled code,
names at the file system's limit. Every case gets one bounded message naming the file, in bounded time."""

from __future__ import annotations

import os
import pickle
import re
import time
import zipfile
from pathlib import Path

import pytest

from noam_plugin import safe_io
from noam_plugin.errors import CheckpointError
from noam_plugin.safe_io import UnsafeFileError, load_pickle, load_torch, read_bytes, write_atomically

ROOT = Path(__file__).resolve().parents[1]


def torch_file_with_pickle(path: Path, pickled: bytes, compress: bool) -> Path:
    """A torch.save zip whose data.pkl is replaced by `pickled` (deflated when `compress`)."""
    import torch

    plain = path.with_suffix(".plain")
    torch.save({"x": 1}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = pickled if info.filename.endswith("data.pkl") else source.read(info)
            kind = zipfile.ZIP_DEFLATED if compress and info.filename.endswith("data.pkl") else zipfile.ZIP_STORED
            target.writestr(info.filename, data, compress_type=kind)
    plain.unlink()
    return path


def long_string_pickle(n: int) -> bytes:
    """A valid pickle of one str of n characters (protocol 4 BINUNICODE8): deflates to almost nothing."""
    return b"\x80\x04\x8d" + n.to_bytes(8, "little") + b"a" * n + b"."


def bomb_file(path: Path, n: int) -> Path:
    """A torch zip whose data.pkl is a valid pickle of a str of n characters, deflated, written in chunks."""
    torch_file_with_pickle(path, b"", compress=False)
    with zipfile.ZipFile(path) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for name, data in members:
            if not name.endswith("data.pkl"):
                target.writestr(name, data, compress_type=zipfile.ZIP_STORED)
                continue
            with target.open(name, "w", force_zip64=True) as out:
                out.write(b"\x80\x04\x8d" + n.to_bytes(8, "little"))
                chunk = b"a" * (1 << 20)
                for _ in range(n >> 20):
                    out.write(chunk)
                out.write(b"a" * (n % (1 << 20)) + b".")
    return path


def nested_list_pickle(depth: int) -> bytes:
    """A pickle of a list nested `depth` deep, built without recursion (no pickler could write it)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path):
    bomb = torch_file_with_pickle(tmp_path / "bomb.pt", long_string_pickle(64 << 20), compress=True)
    assert bomb.stat().st_size < 1 << 20  # 64 MiB of pickle in well under 1 MiB of file
    start = time.perf_counter()
    with pytest.raises(UnsafeFileError) as caught:
        load_torch(bomb)
    assert time.perf_counter() - start < 2
    message = str(caught.value)
    assert message.startswith(f"{bomb}: its pickle ") and "is 67,108,876 bytes once inflated" in message
    assert "at most 16 MiB" in message and "zip bomb" in message


def test_many_compressed_members_count_together(tmp_path):
    file = tmp_path / "many.pt"
    torch_file_with_pickle(file, pickle.dumps({"x": 1}, protocol=2), compress=False)
    with zipfile.ZipFile(file, "a") as archive:
        for i in range(3):  # each under the cap, together over it
            archive.writestr(f"many/data/{i}", bytes(9 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeFileError, match=r"many\.pt: its compressed members are [\d,]+ bytes once inflated"):
        load_torch(file)


def test_an_honest_small_compressed_pickle_still_loads(tmp_path):
    file = torch_file_with_pickle(tmp_path / "small.pt", pickle.dumps({"updates": 3}, protocol=2), compress=True)
    assert load_torch(file) == {"updates": 3}


def test_deep_nesting_in_a_torch_file_is_one_message(tmp_path):
    file = torch_file_with_pickle(tmp_path / "deep.pt", nested_list_pickle(50_000), compress=False)
    assert file.stat().st_size < 200_000
    with pytest.raises(UnsafeFileError, match=r"deep\.pt: values nested deeper than 100 levels; refused"):
        load_torch(file)


def test_deep_nesting_in_a_plain_pickle_is_one_message(tmp_path):
    file = tmp_path / "deep.pkl"
    file.write_bytes(nested_list_pickle(100_000))
    with pytest.raises(UnsafeFileError, match=r"deep\.pkl: values nested deeper than 100 levels"):
        load_pickle(file, lambda module, name: None, "a test pickle")


def test_pickled_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    file = tmp_path / "evil.pkl"
    file.write_bytes(b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR.")
    with pytest.raises(safe_io.UnpickledCodeError, match=r"'os\.mkdir' is not one of the classes a test pickle"):
        load_pickle(file, lambda module, name: None, "a test pickle")
    evil_torch = tmp_path / "evil.pt"
    torch_file_with_pickle(evil_torch, file.read_bytes(), compress=False)
    with pytest.raises(safe_io.UnpickledCodeError, match="does not run pickled code"):
        load_torch(evil_torch)
    assert not marker.exists()


def test_special_files_are_refused_unopened(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)  # an open() for reading would block forever
    zero = tmp_path / "zero.pt"
    zero.symlink_to("/dev/zero")  # a read would never end
    for path, kind in ((fifo, "a FIFO"), (zero, "a device"), (tmp_path, "a directory")):
        with pytest.raises(UnsafeFileError, match=f"not a regular file \\({kind}"):
            load_torch(path)
    with pytest.raises(UnsafeFileError, match=r"fifo\.pt: is a FIFO \(named pipe\), expected a config"):
        read_bytes(fifo, 100, "a config")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(UnsafeFileError, match="larger than 999 bytes: not a config"):
        read_bytes(big, 999, "a config")


def test_write_atomically_handles_names_at_the_limit_and_names_the_target(tmp_path):
    name = "n" * 251 + ".png"  # 255 bytes: NAME_MAX; a temporary named after it must not be longer
    write_atomically(tmp_path / name, lambda out: out.write(b"png"))
    assert (tmp_path / name).read_bytes() == b"png" and os.listdir(tmp_path) == [name]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError) as caught:  # the parent is a file: the error names the user's path
        write_atomically(blocker / "x.png", lambda out: out.write(b""))
    assert caught.value.filename == str(blocker / "x.png")
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(ValueError, match=r"fifo\.png: exists and is a FIFO \(named pipe\); not replaced"):
        write_atomically(tmp_path / "fifo.png", lambda out: out.write(b""))


def test_a_full_disk_is_said_so():
    error = safe_io.write_failure(
        RuntimeError("[enforce fail at inline_container.cc] basic_ios::clear: iostream error"), "/"
    )
    assert error is not None and "no space left on the device" in str(error) and "MiB free there" in str(error)
    assert safe_io.write_failure(ValueError("other"), "/") is None


def test_unsafe_file_errors_are_checkpoint_errors():
    assert issubclass(UnsafeFileError, CheckpointError)  # every caller that handles one handles the other


def table(path: Path, heading: str = "") -> dict[str, str]:
    text = path.read_text()
    if heading:  # only the section under this heading
        text = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return {k: v for k, v in re.findall(r"^\| (.+?) \| (.+?) \|$", text, re.M) if k != "what"}


def test_docs_list_every_limit():
    """docs/limits.md's table states the values safe_io applies (one source of truth, checked); the README's
    short table is a part of it."""
    limits = dict(safe_io.LIMITS)
    assert table(ROOT / "docs" / "limits.md") == limits
    readme = table(ROOT / "README.md", "\n## Limits\n")
    assert readme and all(limits.get(what) == limit for what, limit in readme.items()), readme
