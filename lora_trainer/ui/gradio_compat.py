"""The few gradio calls that differ between A1111's gradio 3.41 and Forge's gradio 4.40, in one place.

- event listeners take the JavaScript function as `_js=` in 3.x and `js=` in 4.x;
- `gr.LinePlot` / `gr.Gallery` keyword arguments that one version lacks are dropped (4.x has no `every`-less
  `.style()`, 3.41 has no `show_download_button` ...), so the tab is built from one call site;
- `gr.update(...)` exists in both and is what handlers return.
"""

from __future__ import annotations

import inspect

import gradio as gr

GRADIO_MAJOR = int(str(getattr(gr, "__version__", "3")).split(".")[0] or 3)
JS_KEYWORD = "js" if GRADIO_MAJOR >= 4 else "_js"


def js_event(listener, js_function: str, inputs=None, outputs=None, fn=None):
    """`button.click(None, _js=...)` (3.x) / `button.click(None, js=...)` (4.x)."""
    return listener(fn, inputs=inputs or [], outputs=outputs or [], **{JS_KEYWORD: js_function})


def _supported(component_cls, kwargs: dict) -> dict:
    params = inspect.signature(component_cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()) and GRADIO_MAJOR < 4:
        return kwargs  # 3.x components accept **kwargs and ignore the unknown ones
    return {k: v for k, v in kwargs.items() if k in params}


def component(component_cls, **kwargs):
    """`component_cls(**kwargs)` without the keyword arguments this gradio does not know."""
    return component_cls(**_supported(component_cls, kwargs))


def line_plot(**kwargs):
    return component(gr.LinePlot, **kwargs)


def gallery(**kwargs):
    return component(gr.Gallery, **kwargs)
