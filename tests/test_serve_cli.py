"""``edgernn serve`` on the command line: argument checks, the missing extra named in one line, and the
device path (``import edgernn``) never importing paho."""

from __future__ import annotations

import subprocess
import sys

import pytest
import serve_common as S

from edgernn.cli import main

HIDE_PAHO = "import sys\nfor m in ('paho', 'paho.mqtt', 'paho.mqtt.client'):\n    sys.modules[m] = None\n"


def _py(code: str):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_device_path_and_serve_core_do_not_import_paho_or_ray():
    r = _py(
        "import sys, edgernn, edgernn.serve, edgernn.cli\n"
        "edgernn.cli.build_parser()\nprint('paho' in sys.modules, 'ray' in sys.modules)"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False False"


def test_missing_paho_is_one_clear_line(tmp_path):
    code = (
        HIDE_PAHO
        + "from edgernn.cli import main\n"
        + f"sys.exit(main(['serve', {str(tmp_path / 'm.ernn')!r}, '--broker', '127.0.0.1:1']))"
    )
    r = _py(code)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "edgernn[serve]" in lines[0] and "paho" in lines[0], r.stderr


def test_missing_ray_is_one_clear_line(tmp_path):
    code = (
        "import sys\nsys.modules['ray'] = None\n"
        + "from edgernn.cli import main\n"
        + f"sys.exit(main(['serve', {str(tmp_path / 'm.ernn')!r}, '--broker', '127.0.0.1:1', '--ray', '2']))"
    )
    r = _py(code)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "edgernn[ray]" in lines[0] and "ray is not installed" in lines[0], r.stderr


@pytest.mark.parametrize(
    "args, what",
    [
        (["--broker", "localhost"], "HOST:PORT"),
        (["--broker", "h:99999"], "HOST:PORT"),
        (["--broker", "h:1", "--shard", "2/2"], "I/N"),
        (["--broker", "h:1", "--shard", "x"], "I/N"),
        (["--broker", "h:1", "--idle-timeout", "-1"], "positive"),
        (["--broker", "h:1", "--snapshot-every", "0"], "positive"),
    ],
)
def test_bad_arguments_are_named(capsys, args, what):
    with pytest.raises(SystemExit) as e:
        main(["serve", "m.ernn", *args])
    assert e.value.code == 2
    assert what in capsys.readouterr().err


def test_unreachable_broker_and_missing_model_are_errors(tmp_path, capsys):
    pytest.importorskip("paho.mqtt.client")
    import builders as B
    import numpy as np

    from edgernn import artifact

    assert main(["serve", str(tmp_path / "none.ernn"), "--broker", "127.0.0.1:1"]) == 1
    assert "error" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    artifact.write(tmp_path / "m.ernn", *B.model([B.recurrent(rng, "gru", "g", 2, 4)], 2))
    port = S.free_port()  # nothing listens there
    assert (
        main(["serve", str(tmp_path / "m.ernn"), "--broker", f"127.0.0.1:{port}", "--backend", "numpy"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgernn serve: error: cannot connect to the broker at 127.0.0.1:"), err


def test_a_child_process_uses_the_same_kernel_cache():
    """A process started by an edgernn process (``edgernn serve`` from a test, a Ray actor) inherits the
    NUMBA_CACHE_DIR edgernn set: it must use that directory, not a cold one nested inside it."""
    code = (
        "import edgernn.kernels.config as c, os; print(c.CACHE_DIR); print(os.environ.get('NUMBA_CACHE_DIR'))"
    )
    import os

    parent = _py(code).stdout.split()
    if parent[1] == "None":
        pytest.skip("the kernel cache is off here")
    env = dict(os.environ, NUMBA_CACHE_DIR=parent[0])
    env.pop("EDGERNN_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.stdout.split() == [parent[0], parent[0]], r.stderr
