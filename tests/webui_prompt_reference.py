"""Run by tests/test_prompts_webui_parity.py under the webui's own Python: builds the tiny SD1 / SD2 / SDXL models,
lets the webui's real `model_hijack.hijack()` wrap their text encoders exactly as it wraps a loaded checkpoint (SDXL:
with sgm's real GeneralConditioner and embedders, weights copied from the tiny model), then computes each caption's
conditioning twice — with the webui's `prompt_parser.get_learned_conditioning` / `sd_models_xl.get_learned_conditioning`
and with this trainer's adapter — and writes the largest differences as JSON.

    python tests/webui_prompt_reference.py WEBUI_DIR REPO_DIR OUT.json
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile

CAPTIONS = [
    # ~100 tokens with emphasis, an escape, nested brackets and tags that cross the 75-token boundary
    "masterpiece, (best quality:1.2), 1girl, solo, kafuu chino \\(gochiusa\\), (long hair), blue eyes, "
    "[simple background], ((smile)), looking at viewer, school uniform, (red ribbon:0.8), pleated skirt, "
    "standing, outdoors, cherry blossoms, [[blurry]], petals, day, sky, cloud, (wind:1.1), hair ornament, "
    "thighhighs, white socks, holding bag, from side, upper body, light particles, sunlight, (depth of field)",
    "a photo of a cat BREAK (sitting on a red sofa:1.3), [dark], window light, film grain",
    "plain caption without any emphasis, " + ", ".join(f"tag{i}" for i in range(30)),
]
PARSE_CASES = [
    "normal text", "an (important) word", "(unbalanced", "\\(literal\\]", "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", "", "stray) and ] and :1.2) here", "a\\b \\\\ c",
    "( spaced : 1.25 )", "(neg:-0.5)", "a BREAK b", "(a BREAK b)", "BREAKFAST", "x BREAK BREAK y", "[(a:1.2) b]",
    "((a)", "a:b:c", "(a:1e3)", "(a:+2)", "\\", "(\\))", "[a|b]", "[a:b:5]",
]


def fuzz_cases(n=400, seed=0):
    rng = random.Random(seed)
    alphabet = ["(", ")", "[", "]", ":", "\\", " ", "a", "b", "1", ".", "2", "BREAK", ",", "-", "+", " :1.5)"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(n)]


def boot_webui(webui_dir: str):
    data_dir = tempfile.mkdtemp(prefix="webui-data-")
    sys.argv = [sys.argv[0], "--skip-torch-cuda-test", "--use-cpu", "all", "--no-half", "--no-half-vae",
                "--precision", "full", "--skip-version-check", "--disable-safe-unpickle", "--data-dir", data_dir]
    os.chdir(webui_dir)
    sys.path.insert(0, webui_dir)
    from modules import initialize

    initialize.imports()


def max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def compare_parser(out):
    from modules import prompt_parser

    from lora_trainer.prompts import parse_emphasis

    mismatches = []
    for text in PARSE_CASES + fuzz_cases():
        try:
            ref = prompt_parser.parse_prompt_attention(text)
        except ValueError:
            ref = "error"
        try:
            ours = parse_emphasis(text)
        except ValueError:
            ours = "error"
        if ref != ours:
            mismatches.append({"text": text, "webui": ref, "ours": ours})
    out["parser"] = {"cases": len(PARSE_CASES) + 400, "mismatches": mismatches[:10], "n_mismatches": len(mismatches)}


def real_sgm_conditioner(tiny):
    """sgm's own GeneralConditioner + embedders (as sd_xl_base.yaml builds them), holding the tiny model's weights."""
    from sgm.modules import GeneralConditioner

    src1, src2 = tiny.conditioner.embedders[0], tiny.conditioner.embedders[1]
    size = {"target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": 256},
            "is_trainable": False}
    arch = [name for name in __import__("open_clip").list_models() if name.startswith("lora-trainer-sdxl-te2")][0]
    conditioner = GeneralConditioner([
        {"target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder", "is_trainable": False, "input_key": "txt",
         "params": {"version": src1.transformer.config._name_or_path, "layer": "hidden",
                    "layer_idx": src1.layer_idx, "device": "cpu"}},
        {"target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2", "is_trainable": False, "input_key": "txt",
         "params": {"arch": arch, "version": None, "freeze": True, "layer": "penultimate",
                    "always_return_pooled": True, "legacy": False, "device": "cpu"}},
        dict(size, input_key="original_size_as_tuple"), dict(size, input_key="crop_coords_top_left"),
        dict(size, input_key="target_size_as_tuple"),
    ])
    conditioner.embedders[0].transformer.load_state_dict(src1.transformer.state_dict())
    conditioner.embedders[1].model.load_state_dict(src2.model.state_dict())
    return conditioner


def add_embedding(model, arch, dims):
    """A 2-vector textual-inversion embedding registered in the webui's own EmbeddingDatabase."""
    import torch
    from modules import sd_hijack
    from modules.textual_inversion.textual_inversion import Embedding

    gen = torch.Generator().manual_seed(7)
    if arch == "sdxl":
        vec = {"clip_l": torch.randn(2, dims[0], generator=gen), "clip_g": torch.randn(2, dims[1], generator=gen)}
    else:
        vec = torch.randn(2, dims[0], generator=gen)
    embedding = Embedding(vec, "sksemb")
    embedding.vectors, embedding.shape = 2, dims[0]
    db = sd_hijack.model_hijack.embedding_db
    db.register_embedding(embedding, model)
    return db


def compare_arch(arch, out):
    import torch
    from modules import prompt_parser, sd_hijack, sd_models_xl, shared

    from lora_trainer.arch.adapters import SizeConditioning, get_adapter
    from lora_trainer.prompts import PromptOptions
    from lora_trainer.testing import build_tiny_model

    torch.manual_seed(0)
    model = build_tiny_model(arch, seed=0)
    if arch == "sdxl":
        model.conditioner = real_sgm_conditioner(model)
    sd_hijack.model_hijack.hijack(model)  # the webui's own wrapping of the text encoders
    adapter = get_adapter(model)
    dims = [p.embedder.transformer.config.hidden_size if p.kind == "hf_clip"
            else p.embedder.model.ln_final.weight.shape[0] for p in adapter.text_encoders]
    db = add_embedding(model, arch, dims)
    results = {}

    def webui_cond(texts):
        if arch == "sdxl":
            c = sd_models_xl.get_learned_conditioning(model, prompt_parser.SdConditioning(texts, width=64, height=64))
            return c["crossattn"], c["vector"]
        conds = prompt_parser.get_learned_conditioning(model, prompt_parser.SdConditioning(texts), 20)
        return torch.stack([c[0].cond for c in conds]), None

    # caption4: the embedding sits in the tail that comma back-tracking moves to the next chunk
    captions = CAPTIONS + ["portrait of (sksemb:1.2), " + CAPTIONS[0], "cat " * 70 + ", sksemb dog dog dog dog"]
    for emphasis, weighted in (("Original", True), ("None", False)):
        shared.opts.data["emphasis"] = emphasis
        for clip_skip in ((1, 2) if arch != "sdxl" else (1,)):
            shared.opts.data["CLIP_stop_at_last_layers"] = clip_skip
            for n, caption in enumerate(captions):
                with torch.no_grad():
                    ref, ref_vector = webui_cond([caption])
                    ours = adapter.encode_text([caption], clip_skip, prompts=PromptOptions(weighted=weighted),
                                               embeddings=db)
                    # controls: what the comparison must tell apart (emphasis off vs on, embedding missing)
                    other = adapter.encode_text([caption], clip_skip, prompts=PromptOptions(weighted=not weighted))
                    no_emb = adapter.encode_text([caption], clip_skip, prompts=PromptOptions(weighted=weighted))
                key = f"{emphasis}/clip{clip_skip}/caption{n}"
                entry = {"shape_webui": list(ref.shape), "shape_ours": list(ours.context.shape)}
                if ref.shape == ours.context.shape:
                    entry["context"] = max_diff(ref, ours.context)
                if other.context.shape == ref.shape:
                    entry["control_other_emphasis"] = max_diff(ref, other.context)
                if "sksemb" in caption:
                    entry["control_no_embedding"] = max_diff(ref, no_emb.context)
                if ref_vector is not None:
                    sizes = SizeConditioning(*(torch.tensor([v], dtype=torch.float32)
                                               for v in ((64, 64), (shared.opts.sdxl_crop_top,
                                                                    shared.opts.sdxl_crop_left), (64, 64))))
                    pooled = ours.pooled.shape[1]
                    entry["pooled"] = max_diff(ref_vector[:, :pooled], ours.pooled)
                    vector = torch.cat([ours.pooled, adapter.size_vector(sizes, "cpu")], 1)
                    entry["vector"] = max_diff(ref_vector, vector)
                results[key] = entry
        # a batch: the webui pads the shorter prompt with empty chunks; no emphasis, so no batch-wide mean
        if not weighted:
            shared.opts.data["CLIP_stop_at_last_layers"] = 1
            with torch.no_grad():
                ref = model.cond_stage_model(captions[1:3]) if arch != "sdxl" else \
                    webui_cond(captions[1:3])[0]
                ref = ref[0] if isinstance(ref, tuple) else ref
                ours = adapter.encode_text(captions[1:3], prompts=PromptOptions(weighted=False), embeddings=db)
            results["None/batch"] = {"shape_webui": list(ref.shape), "shape_ours": list(ours.context.shape),
                                     "context": max_diff(ref, ours.context) if ref.shape == ours.context.shape
                                     else None}
    shared.opts.data["emphasis"] = "Original"
    shared.opts.data["CLIP_stop_at_last_layers"] = 1
    try:
        sd_hijack.model_hijack.undo_hijack(model)
    except Exception as exc:  # only tidying up a model nobody uses after this
        results["undo_hijack_error"] = repr(exc)
    db.word_embeddings.clear()
    db.ids_lookup.clear()
    out[arch] = results


def main():
    webui_dir, repo_dir, out_path = sys.argv[1:4]
    boot_webui(webui_dir)
    sys.path.insert(0, repo_dir)
    out = {}
    compare_parser(out)
    for arch in ("sd1", "sd2", "sdxl"):
        compare_arch(arch, out)
    from modules import shared

    from lora_trainer.ui.webui import WebuiHost

    shared.opts.data["CLIP_stop_at_last_layers"] = 2
    out["host_clip_skip"] = WebuiHost().clip_skip()
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
