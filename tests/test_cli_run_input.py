"""`edgernn run` and `edgernn.textrows`: every line of user data is used or refused, never dropped.

The oracle is ``Model.predict`` on the same numbers, parsed here with ``float``; errors must name the
file line (1-based, as an editor shows it) and what is wrong, in one stderr line, with a non-zero exit.
"""

from __future__ import annotations

import select
import subprocess
import sys

import numpy as np
import pytest
from builders import dense, model, recurrent

import edgernn
from edgernn.textrows import read_rows


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    rng = np.random.default_rng(3)
    plan, tensors = model([recurrent(rng, "gru", "g", 3, 8), dense(rng, "d", 8, 2)], 3)
    path = tmp_path_factory.mktemp("run") / "m.ernn"
    edgernn.artifact.write(path, plan, tensors)
    return path


def _cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "edgernn.cli", *args], input=stdin, capture_output=True, text=True, timeout=600
    )


def _X(n=301, seed=0):
    return np.round(np.random.default_rng(seed).normal(size=(n, 3)), 4).astype(np.float32)


def _outputs(stdout: str) -> np.ndarray:
    return np.array([[float(v) for v in ln.split(",")] for ln in stdout.splitlines()], np.float32)


def _one_error_line(r) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_bad_field_is_an_error_naming_the_file_line(art, tmp_path):
    X = _X()
    rows = [",".join(f"{v:.4f}" for v in x) for x in X]
    rows[50] = rows[50].replace(",", ",x", 1)  # data row 51 (0-based 50) -> file line 52 after the header
    (tmp_path / "x.csv").write_text("ax,ay,az\n" + "\n".join(rows) + "\n")
    r = _cli("run", str(art), str(tmp_path / "x.csv"))
    err = _one_error_line(r)
    assert "line 52:" in err and "field 2" in err and "is not a number" in err, err
    assert str(tmp_path / "x.csv") in err
    # the same through stdin, with comments and blank lines counted as the editor counts them
    text = "# recorded 2026-01-01\n\nax,ay,az\n" + "\n".join(rows) + "\n"
    r = _cli("run", str(art), "-", stdin=text)
    assert "stdin line 54:" in _one_error_line(r)


def test_semicolon_file_streams_every_row(art, tmp_path):
    X = _X(40)
    text = "t1;t2;t3\n" + "\n".join(";".join(f"{v:.4f}" for v in x) for x in X) + "\n"
    (tmp_path / "x.csv").write_text(text)
    r = _cli("run", str(art), str(tmp_path / "x.csv"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(_outputs(r.stdout), edgernn.load(art).predict(X), rtol=1e-5, atol=1e-6)
    r = _cli("run", str(art), str(tmp_path / "x.csv"), "--delimiter", ",")  # given, and wrong: refused
    assert f"{tmp_path / 'x.csv'} line 2:" in _one_error_line(r)


@pytest.mark.parametrize(
    "sep,flag",
    [
        (";", None),
        ("\t", None),
        (" ", None),
        (", ", None),
        (",", None),
        (";", ";"),
        ("\t", "tab"),
        ("  ", "whitespace"),
        (" ", " "),
    ],
)
def test_separators_detected_or_given(sep, flag):
    X = _X(20)
    lines = ["t1;t2;t3" if sep == ";" else "ax ay az"] + [sep.join(f"{v:.4f}" for v in x) for x in X]
    got = list(read_rows(lines, 3, flag))
    assert [n for n, _ in got] == list(range(2, 22))
    np.testing.assert_array_equal(np.stack([x for _, x in got]), X)


def test_wrong_counts_and_stray_names_are_errors(art):
    good = [",".join(f"{v:.4f}" for v in x) for x in _X(5)]
    cases = [
        (["1,2", *good], "line 1: 2 values, the model takes 3"),
        ([*good, "1,2,3,4"], "line 6: 4 values, the model takes 3"),
        ([*good, "ax,ay,az"], "line 6: field 1 'ax' is not a number"),  # a header only as the first line
        (["t,1,2", *good], "line 1: field 1 't' is not a number"),  # names mixed with numbers: no header
        ([*good, "1,,3"], "line 6: field 2 is empty"),
        ([*good, "1,2,3,"], "line 6: field 4 is empty"),
        (["0,5;1,5;2,5"], "line 1: field 1 '0,5' is not a number (a decimal comma?"),
        (["1\t2\t3"], None),  # detected as tab-separated: fine
        (["# a comment", "", "ax ay az", "1 2 3", "", "1 2"], "line 6: 2 values"),
    ]
    for lines, want in cases:
        if want is None:
            assert len(list(read_rows(lines, 3))) == 1
            continue
        with pytest.raises(edgernn.InputError) as e:
            list(read_rows(lines, 3))
        assert str(e.value).startswith(want), (lines, str(e.value))
    # a separator given that the lines do not use: refused, not taken for a header
    with pytest.raises(edgernn.InputError, match="^line 1: field 1"):
        list(read_rows(["1\t2\t3", "4\t5\t6"], 3, ","))
    # through the CLI: one stderr line naming the line; a non-finite value is refused by the model
    r = _cli("run", str(art), "-", stdin="\n".join([*good, "1,2,3,4"]) + "\n")
    assert "stdin line 6: 4 values, the model takes 3" in _one_error_line(r)
    r = _cli("run", str(art), "-", stdin="\n".join([*good, "nan,1,2"]) + "\n")
    assert "stdin line 6:" in _one_error_line(r) and "non-finite" in r.stderr


def test_npy_input_of_the_wrong_rank_is_refused(art, tmp_path):
    np.save(tmp_path / "x3.npy", np.zeros((2, 4, 3), np.float32))
    r = _cli("run", str(art), str(tmp_path / "x3.npy"))
    assert "shape (T, 3)" in _one_error_line(r)


def test_stdin_streams_each_prediction_as_its_line_arrives(art):
    X = _X(3)
    ref = edgernn.load(art).stream()
    p = subprocess.Popen(
        [sys.executable, "-m", "edgernn.cli", "run", str(art), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        p.stdin.write("ax,ay,az\n")
        for x in X:
            p.stdin.write(",".join(f"{v:.4f}" for v in x) + "\n")
            p.stdin.flush()  # stdin stays open: the answer must come before the next sample is sent
            ready, _, _ = select.select([p.stdout], [], [], 300)
            assert ready, "no prediction printed for a sample while stdin stays open"
            got = np.array([float(v) for v in p.stdout.readline().split(",")], np.float32)
            np.testing.assert_allclose(got, ref.step(x), rtol=1e-5, atol=1e-6)
        p.stdin.close()
        assert p.wait(timeout=300) == 0, p.stderr.read()
    finally:
        p.kill()
        p.wait()


def test_read_rows_rules():
    rows = list(read_rows(["# c", "a;b", "", "1;2", "3;4"], 2))
    assert [n for n, _ in rows] == [4, 5]
    np.testing.assert_array_equal(np.stack([x for _, x in rows]), [[1, 2], [3, 4]])
    assert [n for n, _ in read_rows(["1 2", "3  4"])] == [1, 2]  # width from the first row
    with pytest.raises(edgernn.InputError, match=r"^line 2: 1 values, expected 2"):
        list(read_rows(["1 2", "3"]))
    # one value per line shows no separator: detection waits for a line that does
    with pytest.raises(edgernn.InputError, match=r"^line 3: 2 values, the model takes 1 \(comma"):
        list(read_rows(["0.1", "0.2", "0.3,0.4"], 1))
    with pytest.raises(edgernn.InputError, match="delimiter must be one of"):
        list(read_rows(["1"], 1, delimiter="|"))
