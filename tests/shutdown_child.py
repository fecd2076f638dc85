"""Child process for test_ui_shutdown: a job runner with the real engine on a tiny SD1 model, the shutdown hooks
installed over a SIGINT handler that behaves like the webui's (`os._exit(0)`, no atexit). Prints STEP <n> lines;
the test sends SIGINT while it trains. Usage: shutdown_child.py OUTPUT_DIR"""

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

import torch  # noqa: E402
from ui_fakes import FakeHost  # noqa: E402

from lora_trainer.config import TrainConfig  # noqa: E402
from lora_trainer.demo import make_demo_dataset  # noqa: E402
from lora_trainer.testing import build_tiny_model  # noqa: E402
from lora_trainer.ui.job import JobRunner  # noqa: E402
from lora_trainer.ui.lifecycle import install_shutdown_hooks  # noqa: E402


def webui_sigint(sig, frame):  # modules/initialize_util.py configure_sigint_handler
    print(f"Interrupted with signal {sig}", flush=True)
    os._exit(0)


class Host(FakeHost):
    def update(self, step, total, textinfo):
        print(f"STEP {step}", flush=True)
        time.sleep(0.05)


def main():
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    signal.signal(signal.SIGINT, webui_sigint)
    runner = JobRunner(Host(model=build_tiny_model("sd1")))
    install_shutdown_hooks(runner.shutdown)
    data = make_demo_dataset(out / "data", count=2)
    config = TrainConfig(train_dir=str(data), output_dir=str(out / "lora"), output_name="hero", resolution=64,
                         enable_bucket=False, network_dim=4, network_alpha=4, max_train_steps=100000,
                         mixed_precision="fp32", gradient_checkpointing=False, cache_latents=False).validate()
    runner.start(config)
    while True:  # the webui's main thread: waiting for a server command
        time.sleep(0.1)


if __name__ == "__main__":
    main()
