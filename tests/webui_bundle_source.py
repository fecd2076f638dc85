"""The webui's own code that reads embeddings, lifted from a webui checkout (WEBUI_DIR) without importing the
webui: networks.py load_network's `bundle_emb` grouping, textual_inversion.py's `Embedding` and
`create_embedding_from_data`. Used to prove our files read back as the webui reads them."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import torch


def _source(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _named(tree, kind, name):
    return next(node for node in ast.walk(tree) if isinstance(node, kind) and node.name == name)


def webui_functions(webui_dir) -> types.SimpleNamespace:
    webui_dir = Path(webui_dir)
    ti = _source(webui_dir / "modules" / "textual_inversion" / "textual_inversion.py")
    module = ast.Module(body=[_named(ti, ast.ClassDef, "Embedding"),
                              _named(ti, ast.FunctionDef, "create_embedding_from_data")], type_ignores=[])
    namespace = {"torch": torch, "devices": types.SimpleNamespace(device=torch.device("cpu")),
                 "hashes": types.SimpleNamespace(sha256=lambda *a, **k: None)}
    exec(compile(module, "textual_inversion.py", "exec"), namespace)

    load_network = _named(_source(webui_dir / "extensions-builtin" / "Lora" / "networks.py"), ast.FunctionDef,
                          "load_network")
    loop = next(node for node in ast.walk(load_network)
                if isinstance(node, ast.For) and ast.unparse(node.iter) == "sd.items()")
    body = []
    for statement in loop.body:  # up to and including the bundle_emb branch
        body.append(statement)
        if isinstance(statement, ast.If) and "bundle_emb" in ast.unparse(statement.test):
            break
    else:
        raise AssertionError("the webui's networks.py has no bundle_emb branch any more")
    func = ast.parse("def bundle_embeddings_of(sd, diffusers_weight_map=None):\n"
                     "    bundle_embeddings = {}\n    return bundle_embeddings").body[0]
    func.body.insert(1, ast.For(target=loop.target, iter=loop.iter, body=body, orelse=[]))
    exec(compile(ast.fix_missing_locations(ast.Module(body=[func], type_ignores=[])), "networks.py", "exec"),
         namespace)
    return types.SimpleNamespace(bundle_embeddings_of=namespace["bundle_embeddings_of"],
                                 create_embedding_from_data=namespace["create_embedding_from_data"])
