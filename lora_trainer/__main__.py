"""`python -m lora_trainer <command>`: one small module per command under lora_trainer/cli/."""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module with add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": ("lora_trainer.cli.demo_cmd", "train a tiny model on a generated dataset (CPU, < 1 min)"),
    "train": ("lora_trainer.cli.train_cmd", "train a LoRA from a TOML/JSON config"),
    "dataset": ("lora_trainer.cli.dataset_cmd", "check a kohya-style dataset folder and print the report"),
    "inspect": ("lora_trainer.cli.inspect_cmd", "inspect a LoRA .safetensors file"),
    "plan": ("lora_trainer.cli.plan_cmd", "estimate the device memory a config needs (will it fit?)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m lora_trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    # import only the command asked for (the dataset check must not pay for importing torch)
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    for name in chosen:
        module_name, help_text = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # command not built yet
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
