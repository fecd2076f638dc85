"""sgm's SDXL conditioner and embedders (`sgm.modules.encoders.modules`), re-stated on the real HF / OpenCLIP towers.

Behaviour kept from sgm: TE1 returns a hidden layer (SDXL: layer_idx 11 = penultimate, no final LayerNorm);
TE2 returns the penultimate layer (no final LayerNorm) and a pooled vector (final LayerNorm at the EOT token,
times `text_projection`); size embedders are sinusoidal (256 per number); non-trainable embedders run under no_grad.
"""

from __future__ import annotations

from .torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

import open_clip  # noqa: E402
import torch  # noqa: E402
from ldm.modules.diffusionmodules.util import timestep_embedding  # noqa: E402
from torch import nn  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402


class AbstractEmbModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.legacy_ucg_val = None


class FrozenCLIPEmbedder(AbstractEmbModel):
    def __init__(self, version, device="cpu", max_length=77, layer="hidden", layer_idx=11):
        super().__init__()
        self.tokenizer = CLIPTokenizer.from_pretrained(version)
        self.transformer = CLIPTextModel.from_pretrained(version)
        self.device, self.max_length, self.layer, self.layer_idx = device, max_length, layer, layer_idx

    def forward(self, text):
        tokens = self.tokenizer(text, truncation=True, max_length=self.max_length, padding="max_length",
                                return_tensors="pt")["input_ids"].to(self.transformer.device)
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        return outputs.last_hidden_state if self.layer == "last" else outputs.hidden_states[self.layer_idx]


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    def __init__(self, arch, version=None, device="cpu", max_length=77, layer="penultimate",
                 always_return_pooled=True, legacy=False):
        super().__init__()
        model, _, _ = open_clip.create_model_and_transforms(arch, device=torch.device("cpu"), pretrained=version)
        del model.visual
        self.model = model
        self.device, self.max_length, self.layer = device, max_length, layer
        self.layer_idx = 1 if layer == "penultimate" else 0
        self.return_pooled, self.legacy = always_return_pooled, legacy

    def forward(self, text):
        tokens = open_clip.tokenize(text).to(self.model.positional_embedding.device)
        z = self.encode_with_transformer(tokens)
        return (z[self.layer], z["pooled"]) if self.return_pooled else z[self.layer]

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text) + self.model.positional_embedding
        x = self.text_transformer_forward(x.permute(1, 0, 2), attn_mask=self.model.attn_mask)
        x["pooled"] = self.pool(self.model.ln_final(x["last"]), text)
        return x

    def pool(self, x, text):
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)
            x = r(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """(B, 2) sizes -> (B, 2*outdim): a sinusoidal embedding per number, cos first (sgm `Timestep`)."""

    def __init__(self, outdim=256):
        super().__init__()
        self.outdim = outdim

    def forward(self, x):
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        emb = timestep_embedding(x.reshape(b * dims), self.outdim)
        return emb.reshape(b, dims * self.outdim)


class GeneralConditioner(nn.Module):
    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, embedders_with_keys):
        super().__init__()
        for embedder, key in embedders_with_keys:
            embedder.input_key = key
            for p in embedder.parameters():
                p.requires_grad = False
        self.embedders = nn.ModuleList([e for e, _ in embedders_with_keys])

    def forward(self, batch):
        output = {}
        for embedder in self.embedders:
            ctx = torch.enable_grad() if embedder.is_trainable else torch.no_grad()
            with ctx:
                emb_out = embedder(batch[embedder.input_key])
            for emb in emb_out if isinstance(emb_out, (list, tuple)) else [emb_out]:
                key = self.OUTPUT_DIM2KEYS[emb.dim()]
                output[key] = torch.cat((output[key], emb), self.KEY2CATDIM[key]) if key in output else emb
        return output
