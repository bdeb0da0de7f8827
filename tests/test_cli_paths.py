"""Every command turns a missing input or an unwritable output into one stderr line naming the path.

Each case runs the command as a user would (a subprocess). The unwritable output sits under a regular
file, so it cannot be created even as root. Commands without an input file (warmup, demo today) are
checked for their output only; inspect writes nothing.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from builders import dense, model, recurrent

import edgernn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "rnn", "r", 2, 4), dense(rng, "d", 4, 1)], 2)
    edgernn.artifact.write(d / "m.ernn", plan, tensors)
    (d / "x.csv").write_text("1,2\n3,4\n")
    (d / "plain").write_text("a regular file, not a directory\n")
    return d


MISSING = "no-such-dir/missing"
#: command line per case; {d} is the fixture folder, {m} a path that does not exist
CASES = {
    "export-input": "export {m}.safetensors -o {d}/out",
    "export-example": "export {d}/m.ernn --example {m}.npy -o {d}/out",
    "compile-input": "compile {m}.onnx -o {d}/o.ernn",
    "compile-calibration": "compile {d}/m.ernn --calibration {m}.npy -o {d}/o.ernn",
    "inspect-input": "inspect {m}.ernn",
    "run-model": "run {m}.ernn {d}/x.csv",
    "run-input": "run {d}/m.ernn {m}.csv",
    "bench-input": "bench {m}.ernn",
    "export-output": "export {d}/m.ernn -o {d}/plain/out",
    "compile-output": "compile {d}/m.ernn -o {d}/plain/o.ernn",
    "run-output": "run {d}/m.ernn {d}/x.csv -o {d}/plain/y.npy",
    "run-output-dir-missing": "run {d}/m.ernn {d}/x.csv -o {d}/nodir/y.npy",
    "bench-json": "bench {d}/m.ernn --quick --json {d}/plain/r.json",
    "bench-plot": "bench {d}/m.ernn --quick --plot {d}/plain/r.png",
    "warmup-output": "warmup --cache-dir {d}/plain/cache",
    "aot-input": "aot {m}.ernn",
    "aot-output": "aot {d}/m.ernn -o {d}/plain/aot",
    "demo-output": "demo -o {d}/plain/demo",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_input_or_unwritable_output_is_one_line(files, case):
    m = str(files / MISSING)
    argv = CASES[case].format(d=files, m=m).split()
    r = subprocess.run(
        [sys.executable, "-m", "edgernn.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0, (case, r.stdout[-500:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"edgernn {argv[0]}: error: "), lines[0]
    named = m if "input" in case or case in ("run-model", "export-example", "compile-calibration") else None
    if named is None:
        named = next(a for a in argv if "/plain/" in a or "/nodir/" in a)
    assert named in lines[0], (lines[0], named)


def test_undecodable_text_inputs_are_one_line(files):
    (files / "binary.csv").write_bytes(b"\xff\xfe\x00\x01" * 8)
    (files / "labels.bin").write_bytes(b"\xff\xfe\x00\x01")
    (files / "any.onnx").write_bytes(b"\x08\x07")
    for argv, want in (
        (["run", str(files / "m.ernn"), str(files / "binary.csv")], "binary.csv: not a text file"),
        (
            ["compile", str(files / "any.onnx"), "--labels", str(files / "labels.bin")],
            "not a UTF-8 text file",
        ),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "edgernn.cli", *argv],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and want in lines[0], r.stderr
