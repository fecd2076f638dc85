"""Run a training command in this process and record, from outside its code, when each optimizer step ends and
the peak memory over the steps: `python bench/probe_run.py --out probe.json (-m MODULE | --script FILE) ARGS...`.

Both trainers in bench_vs_kohya.py are measured by this one probe (stdlib + torch only, so it runs in
sd-scripts' own venv too): a global optimizer step hook time-stamps every step (wall clock and process CPU
time), a thread samples the resident set size (CPU) or `torch.cuda.max_memory_allocated` is reset at the
first step (GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import threading
import time


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-m", dest="module")
    target.add_argument("--script")
    parser.add_argument("--torchvision-shim", action="store_true",
                        help="make a CUDA-build torchvision importable on a CPU torch (lora_trainer.testing)")
    args, rest = parser.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]

    import torch

    if args.torchvision_shim:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
    stamps: list = []
    cpu_stamps: list = []
    peak = {"rss": 0, "cuda": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            if stamps:
                peak["rss"] = max(peak["rss"], _rss())
            time.sleep(0.005)

    def on_step(optimizer, *_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            if not stamps:
                torch.cuda.reset_peak_memory_stats()
            peak["cuda"] = max(peak["cuda"], torch.cuda.max_memory_allocated())
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())  # CPU time: robust when other jobs share the cores

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(on_step)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    code = 0
    try:
        if args.module:
            sys.argv = [args.module] + rest
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            folder = os.path.dirname(os.path.abspath(args.script))
            sys.path.insert(0, folder)
            os.chdir(folder)  # sd-scripts imports its `library` / `networks` packages from its root
            sys.argv = [args.script] + rest
            runpy.run_path(args.script, run_name="__main__")
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        stop.set()
        thread.join()
        handle.remove()
    with open(args.out, "w") as f:
        json.dump({"exit_code": code, "start": start, "step_ends": stamps, "step_ends_cpu": cpu_stamps,
                   "peak_rss": peak["rss"], "peak_cuda": peak["cuda"]}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
