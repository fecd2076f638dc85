"""Issue 12: a tab that always tells the truth — the status after a page load, click answers that stay, the
dataset start check, the progress bar's place, and the page re-attaching to a running job by itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from lora_trainer.ui import form  # noqa: E402
from lora_trainer.ui.api import register_routes  # noqa: E402
from lora_trainer.ui.handlers import Handlers  # noqa: E402
from lora_trainer.ui.job import JobRunner  # noqa: E402
from lora_trainer.ui.preflight import JobRefused  # noqa: E402
from lora_trainer.ui.tab import build_tab  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_job import FakeTrain  # noqa: E402
from ui_fakes import FakeHost, fake_sd1_model, make_dataset  # noqa: E402

ROOT = Path(__file__).parent.parent


@pytest.fixture
def setup(tmp_path):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    fake = FakeTrain(host)
    runner = JobRunner(host, train_fn=fake)
    return host, fake, runner, Handlers(runner), tmp_path


def args_for(**overrides):
    values = form.default_values()
    values.update(overrides)
    return [values[f.key] for f in form.FIELDS]


def load_events(blocks):
    """{elem_id: fn} of the values gradio computes at every page load."""
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in blocks.get_config_file()["components"]}
    if hasattr(blocks, "dependencies"):  # gradio 3.41 (A1111)
        return {ids[dep["outputs"][0]]: fn.fn for dep, fn in zip(blocks.dependencies, blocks.fns)
                if dep.get("trigger") == "load"}
    return {fn.outputs[0].elem_id: fn.fn for fn in blocks.fns.values()  # gradio 4.40 (Forge)
            if any(target[1] == "load" for target in fn.targets)}


def test_after_a_page_load_the_status_shows_the_last_job_not_idle(setup):
    """It was computed once when the webui built the tab: 'Idle. No training job has run...' forever."""
    host, fake, runner, handlers, tmp_path = setup
    blocks = build_tab(runner)  # at webui start, before any job
    on_load = load_events(blocks)
    assert "Idle" in on_load["train_lora_status"]()
    job = runner.start(handlers._config(args_for(train_dir=str(make_dataset(tmp_path / "data")),
                                                 output_name="hero")))
    assert job.done.wait(10)
    page = on_load["train_lora_status"]()  # the next page load
    assert "Finished" in page and "hero.safetensors" in page and "Done" in page
    assert "SD1" in on_load["train_lora_model_info"]()


def test_a_refusal_stays_until_the_next_click_or_state_change(setup):
    """The 'already running' refusal was overwritten ~1.4 s later by the periodic refresh."""
    host, fake, runner, handlers, tmp_path = setup
    data = str(make_dataset(tmp_path / "data"))
    fake.gate.clear()
    notice, key, status, task_id, _ = handlers.start(*args_for(train_dir=data))
    assert notice == "" and task_id.startswith("task(")
    assert fake.started.wait(10)
    notice, key, status, task_id, _ = handlers.start(*args_for(train_dir=data, output_name="other"))
    assert "already running" in notice and task_id == gr.update()
    for _ in range(3):  # the page refreshes the panel every few seconds
        *panel, new_notice, new_key = handlers.refresh(key)
        assert new_notice == gr.update() and new_key == gr.update()  # the refusal stays shown
        assert "Training" in panel[0]
    fake.gate.set()
    assert runner.job.done.wait(10)
    *panel, new_notice, new_key = handlers.refresh(key)  # the job's state changed: the old answer goes
    assert new_notice == "" and new_key != key and "Finished" in panel[0]
    notice, key, status = handlers.cancel()  # the next click answers anew
    assert notice == "No training job is running." and "Finished" in status


def test_the_tab_wires_the_notice_apart_from_the_refreshed_status(setup):
    host, fake, runner, handlers, tmp_path = setup
    blocks = build_tab(runner)
    config = blocks.get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    for dep in config["dependencies"]:
        outputs = [ids[i] for i in dep["outputs"]]
        if "train_lora_log" in outputs:  # the refresh
            assert [ids[i] for i in dep["inputs"]] == ["train_lora_notice_key"]
            assert outputs[-2:] == ["train_lora_notice", "train_lora_notice_key"]


def unreadable_dataset(root: Path) -> Path:
    folder = root / "5_thing"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"this is not a png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_a_folder_of_unreadable_images_is_refused_at_start_naming_each_file(setup):
    """It passed the start check and failed later as a job (an empty folder was refused at once)."""
    host, fake, runner, handlers, tmp_path = setup
    data = unreadable_dataset(tmp_path / "data")
    with pytest.raises(JobRefused) as err:
        runner.start(handlers._config(args_for(train_dir=str(data))))
    assert err.value.status_code == 400 and err.value.field == "train_dir"
    assert "a.png" in err.value.message and "b.jpg" in err.value.message and "not an image" in err.value.message
    assert runner.job is None and not fake.started.is_set()
    notice = handlers.start(*args_for(train_dir=str(data)))[0]
    summary, _table = handlers.check_dataset(*args_for(train_dir=str(data)))
    assert "train-lora-error" in notice and summary in notice  # the same report as Check dataset


def test_the_api_refuses_unreadable_images_with_400(setup):
    host, fake, runner, handlers, tmp_path = setup
    app = FastAPI()
    register_routes(app, runner)
    data = unreadable_dataset(tmp_path / "data")
    response = TestClient(app).post("/train-lora/v1/start", json={"config": {"train_dir": str(data)}})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail["field"] == "train_dir" and "a.png" in detail["message"] and "b.jpg" in detail["message"]


def test_the_progress_bar_gets_a_box_of_its_own_not_the_sticky_column(setup):
    """requestProgress() inserts the absolutely placed .progressDiv into the container's parent; the sticky
    column is positioned, so the bar covered the 'Model:' line. Now the container is an anchor in our box."""
    from lora_trainer.ui.tab import PROGRESS_HTML

    assert "train-lora-progress-box" in PROGRESS_HTML and "train_lora_progress_anchor" in PROGRESS_HTML
    css = (ROOT / "style.css").read_text()
    assert ".train-lora-progress-box { position: relative;" in css
    assert ".train-lora-progress-box > .progressDiv { position: relative; top: 0;" in css
    js = (ROOT / "javascript" / "train_lora.js").read_text()
    assert 'getElementById("train_lora_progress_anchor")' in js


JS_HARNESS = r"""
const fs = require("fs");
const clicks = [], progress = [], loaded = [], intervals = [];
const elements = {};
for (const id of ["train_lora_refresh", "train_lora_progress_anchor", "train_lora_previews"]) {
    elements[id] = {id: id, click: () => clicks.push(id)};
}
let currentTab = "tab_txt2img";
global.gradioApp = () => ({getElementById: (id) => elements[id] || null});
global.requestProgress = (task, anchor, gallery, atEnd, onProgress) => progress.push({task, anchor: anchor.id, atEnd});
global.onUiLoaded = (fn) => loaded.push(fn);
global.onUiTabChange = () => {};
global.get_uiCurrentTabContent = () => ({id: currentTab});
global.setInterval = (fn, ms) => intervals.push(fn);
global.document = {hidden: false};
eval(fs.readFileSync(process.argv[2], "utf8") + "\n;global.attach = train_lora_attach_progress;");
const out = {};
loaded.forEach((fn) => fn());
out.afterLoad = clicks.splice(0);
intervals.forEach((fn) => fn());
out.pollOtherTab = clicks.splice(0);
currentTab = "tab_train_lora";
intervals.forEach((fn) => fn());
out.pollOurTab = clicks.splice(0);
attach("task(abc)");
attach("task(abc)");
out.progress = progress.map((p) => [p.task, p.anchor]);
intervals.forEach((fn) => fn());
out.pollWhileAttached = clicks.splice(0);
progress[0].atEnd();
out.atEnd = clicks.splice(0);
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_page_reattaches_by_itself_after_a_reload(tmp_path):
    harness = tmp_path / "harness.js"
    harness.write_text(JS_HARNESS)
    run = subprocess.run(["node", str(harness), str(ROOT / "javascript" / "train_lora.js")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["afterLoad"] == ["train_lora_refresh"]  # page load: ask for the job (its .then attaches the bar)
    assert out["pollOtherTab"] == [] and out["pollOurTab"] == ["train_lora_refresh"]
    assert out["progress"] == [["task(abc)", "train_lora_progress_anchor"]]  # attached once, in our box
    assert out["pollWhileAttached"] == []  # the bar's own callbacks refresh then
    assert out["atEnd"] == ["train_lora_refresh"]
