"""Coverage-guided raw-bytes fuzzing of the ``.ernn`` loader with atheris (not run in CI).

Every input is handed to :func:`edgernn.artifact.parse`; inputs that load are then run through a
:class:`edgernn.runtime.Model` stream step (or ``predict`` for non-streamable models). The only allowed
outcomes are ``ArtifactError`` or a successful step: any other exception, a crash, a hang (``-timeout``)
or a memory blow-up (``-rss_limit_mb``) is a finding, and libFuzzer writes the input to ``crash-*``.

    pip install atheris
    python fuzz/make_corpus.py fuzz/corpus            # valid seeds, one per model family
    python fuzz/fuzz_loader.py fuzz/corpus -max_len=65536 -timeout=10 -rss_limit_mb=1024 -runs=200000

See fuzz/README.md.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from edgernn import artifact
    from edgernn.errors import ArtifactError
    from edgernn.runtime import Model, get_backend


def TestOneInput(data: bytes) -> None:
    try:
        plan, tensors = artifact.parse(data)
        model = Model(plan, tensors)
    except ArtifactError:
        return
    x = np.zeros(model.input_size, np.float32)
    if model.info["streamable"]:
        y = model.stream().step(x)
        assert y.shape == (model.output_size,)
    model.predict(np.stack([x, x]))


def main() -> None:
    get_backend()  # compile the kernels (or load them from the cache) before fuzzing starts
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
