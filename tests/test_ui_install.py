"""install.py: installs only missing, unpinned packages; optional ones are reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_install():
    spec = importlib.util.spec_from_file_location("train_lora_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_missing_unpinned_packages_are_installed(tmp_path):
    install = load_install()
    (tmp_path / "requirements_versions.txt").write_text("safetensors==0.4.2  # pinned\nPillow==9.5.0\ntqdm==4.0\n")
    pins = install.webui_pins(str(tmp_path))
    assert {"safetensors", "pillow", "tqdm"} <= pins
    required = [("tqdm", "tqdm", ""), ("safetensors", "safetensors", ""), ("newpkg", "newpkg", ""),
                ("present", "present", "")]
    installed = {"present"}
    assert install.to_install(required, lambda pip, mod: pip in installed, pins) == ["newpkg"]
    assert install.webui_pins(str(tmp_path / "nowhere")) == set()


def test_optional_packages_are_only_reported():
    install = load_install()
    missing = install.missing_optional(install.OPTIONAL, lambda pip, mod: pip == "prodigyopt")
    assert [name for name, _ in missing] == ["bitsandbytes", "lion-pytorch"]
    assert not any(name in ("bitsandbytes", "prodigyopt", "lion-pytorch") for name, _, _ in install.REQUIRED)
