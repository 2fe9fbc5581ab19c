"""Loading a model's serving code as the container does: `code/$SAGEMAKER_PROGRAM` by path,
with its neighbours importable. Each model gets its own neighbours, even in one process."""

from __future__ import annotations

import textwrap

import pytest

from mlops_local.endpoint.server import ServingCodeError, load_handlers

PROGRAM = textwrap.dedent("""
    import helper

    def model_fn(model_dir): return helper.NAME
    def input_fn(body, content_type): return body
    def predict_fn(data, model): return model
    def output_fn(prediction, accept): return prediction
""")


def _model(root, name: str):
    code = root / name / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(PROGRAM)
    (code / "helper.py").write_text(f"NAME = {name!r}\n")
    return root / name


def test_two_models_in_one_process_each_import_their_own_neighbours(tmp_path):
    first = load_handlers(_model(tmp_path, "first"))
    second = load_handlers(_model(tmp_path, "second"))
    again = load_handlers(tmp_path / "first")
    assert [h.model_fn(None) for h in (first, second, again)] == ["first", "second", "first"]


def test_serving_code_without_a_handler_is_refused_by_name(tmp_path):
    model = _model(tmp_path, "partial")
    (model / "code" / "inference.py").write_text("def model_fn(model_dir): return None\n")
    with pytest.raises(ServingCodeError, match="does not define input_fn, predict_fn, output_fn"):
        load_handlers(model)
