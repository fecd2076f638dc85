"""One tab code base for gradio 3.41 (A1111) and 4.40 (Forge): the JavaScript glue is wired in either, under the
keyword that version uses, and the components get only the arguments it knows. CI runs this under both pins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from lora_trainer.ui import gradio_compat  # noqa: E402
from lora_trainer.ui.job import JobRunner  # noqa: E402
from lora_trainer.ui.tab import build_tab  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ui_fakes import FakeHost, fake_sd1_model  # noqa: E402


def test_js_keyword_matches_the_installed_gradio():
    major = int(gr.__version__.split(".")[0])
    assert gradio_compat.GRADIO_MAJOR == major
    assert gradio_compat.JS_KEYWORD == ("js" if major >= 4 else "_js")


def test_tab_wires_every_javascript_function(tmp_path):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    blocks = build_tab(JobRunner(host))
    config = blocks.get_config_file()
    js = [d.get("js") for d in config["dependencies"] if d.get("js")]
    assert js.count("train_lora_attach_progress") == 2  # after Start and after Refresh
    assert "train_lora_send_to_txt2img" in js
    script = (Path(__file__).parents[1] / "javascript" / "train_lora.js").read_text()
    for name in set(js):
        assert f"function {name}(" in script


def test_component_drops_unknown_arguments():
    plot = gradio_compat.line_plot(x="step", y="loss", title="Loss", no_such_argument=1)
    assert isinstance(plot, gr.LinePlot)
