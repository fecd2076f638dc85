"""Pivotal tuning's parts on the tiny real-class models: the vectors per text encoder and their initialisation,
the webui-style lookup, freezing (no more change, not even weight decay), the file layouts the webui reads."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.pivotal import PivotalEmbeddings, bundle_tensors, embedding_file_tensors, read_bundle
from lora_trainer.pivotal.embeddings import token_ids, token_table
from lora_trainer.pivotal.options import config_warnings
from lora_trainer.testing import build_tiny_model


def _config(**overrides):
    base = dict(train_dir="x", output_dir="y", pivotal_tuning=True, pivotal_token="zkw")
    return TrainConfig(**{**base, **overrides}).validate()


@pytest.mark.parametrize("arch,keys", [("sd1", ["clip_l"]), ("sd2", ["clip_g"]), ("sdxl", ["clip_l", "clip_g"])])
def test_vectors_per_text_encoder_initialised_from_the_class_word(arch, keys):
    adapter = get_adapter(tiny_model(arch))
    emb = PivotalEmbeddings.create(adapter, _config(pivotal_init="woman", pivotal_vectors_per_token=3))
    assert list(emb.embedding.params) == keys
    word = token_ids(adapter, "woman")
    for key, part in zip(keys, adapter.text_encoders):
        table = token_table(part).weight
        vec = emb.embedding.params[key]
        assert vec.shape == (3, table.shape[1]) and vec.requires_grad and vec.dtype == torch.float32
        expected = table[[word[i % len(word)] for i in range(3)]].float()
        assert torch.equal(vec.detach(), expected)
        assert vec.data_ptr() != table.data_ptr()  # a copy: the table itself is never trained
    assert emb.embedding.vectors == 3
    assert isinstance(emb.embedding.vec, dict) == (arch == "sdxl")


def test_random_init_matches_the_table_norm():
    adapter = get_adapter(tiny_model("sdxl"))
    emb = PivotalEmbeddings.create(adapter, _config())
    for key, part in zip(("clip_l", "clip_g"), adapter.text_encoders):
        mean_norm = token_table(part).weight.float().norm(dim=1).mean()
        norms = emb.embedding.params[key].detach().norm(dim=1)
        assert torch.allclose(norms, mean_norm.expand_as(norms), rtol=1e-5)
    again = PivotalEmbeddings.create(adapter, _config())
    assert torch.equal(again.tensors()["clip_g"], emb.tensors()["clip_g"])  # seeded


def test_lookup_finds_the_token_like_the_webui_embedding_database():
    adapter = get_adapter(tiny_model("sd1"))
    emb = PivotalEmbeddings.create(adapter, _config(pivotal_token="zkwqx"))
    ids = token_ids(adapter, "zkwqx")
    assert ids == adapter.text_encoders[0].embedder.tokenizer("zkwqx", add_special_tokens=False)["input_ids"]
    prompt = token_ids(adapter, "a photo of zkwqx")
    at = len(token_ids(adapter, "a photo of"))
    found, length = emb.lookup.find_embedding_at_position(prompt, at)
    assert found is emb.embedding and length == len(ids)
    assert emb.lookup.find_embedding_at_position(prompt, 0) == (None, None)


@pytest.mark.parametrize("optimizer,args", [("AdamW", {"weight_decay": 0.1}), ("Prodigy", {"weight_decay": 0.1})])
def test_freeze_stops_every_change_including_weight_decay(optimizer, args):
    from lora_trainer.train.optimizers import build_optimizer
    from lora_trainer.train.schedulers import build_scheduler

    adapter = get_adapter(tiny_model("sd1"))
    emb = PivotalEmbeddings.create(adapter, _config())
    other = torch.nn.Parameter(torch.ones(4))
    lr = 1.0 if optimizer == "Prodigy" else 1e-2
    opt, _ = build_optimizer(optimizer, [emb.param_group(lr), {"params": [other], "lr": lr, "name": "unet"}], args)
    scheduler = build_scheduler("constant", opt, total_steps=10)

    def step():
        loss = sum((p ** 2).sum() for p in emb.parameters() if p.requires_grad) + (other * 3).sum()
        loss.backward()
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)

    start = emb.tensors()["clip_l"]
    step()
    trained = emb.tensors()["clip_l"]
    assert not torch.equal(start, trained)
    emb.freeze(opt, scheduler)
    before_other = other.detach().clone()
    for _ in range(3):
        step()
    assert torch.equal(emb.tensors()["clip_l"], trained)  # frozen: no gradient step and no weight decay
    assert not torch.equal(other.detach(), before_other)  # the LoRA trains on
    assert [g["lr"] for g in opt.param_groups if g["name"] == "pivotal"] == [0.0]


def test_freeze_step_is_the_fraction_of_the_steps():
    assert PivotalEmbeddings.freeze_step(_config(pivotal_frac=0.5), 10) == 5
    assert PivotalEmbeddings.freeze_step(_config(pivotal_frac=0.01), 10) == 1
    assert PivotalEmbeddings.freeze_step(_config(pivotal_frac=1.0), 10) == 10


def test_file_layouts_are_the_webuis():
    sd = {"clip_l": torch.randn(2, 768)}
    xl = {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}
    assert list(bundle_tensors("zkw", sd)) == ["bundle_emb.zkw.string_to_param.*"]
    assert sorted(bundle_tensors("zkw", xl)) == ["bundle_emb.zkw.clip_g", "bundle_emb.zkw.clip_l"]
    assert list(embedding_file_tensors(sd)) == ["emb_params"]
    assert sorted(embedding_file_tensors(xl)) == ["clip_g", "clip_l"]
    lora = {"lora_unet_x.lora_down.weight": torch.zeros(1)}
    assert torch.equal(read_bundle({**lora, **bundle_tensors("zkw", sd)})["zkw"], sd["clip_l"])
    back = read_bundle({**lora, **bundle_tensors("zkw", xl)})["zkw"]
    assert all(torch.equal(back[k], xl[k]) for k in xl)


@pytest.mark.parametrize("overrides,field", [
    ({"pivotal_token": "two words"}, "pivotal_token"), ({"pivotal_token": "a.b"}, "pivotal_token"),
    ({"pivotal_token": ""}, "pivotal_token"), ({"pivotal_frac": 0}, "pivotal_frac"),
    ({"pivotal_vectors_per_token": 0}, "pivotal_vectors_per_token"),
    ({"cache_text_encoder_outputs": True, "train_text_encoder": False}, "cache_text_encoder_outputs"),
])
def test_bad_pivotal_and_prodigy_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        _config(**overrides)
    assert err.value.field == field


def test_prodigy_groups_with_different_lrs_are_refused_naming_the_parts():
    from lora_trainer.train import TrainError
    from lora_trainer.train.prodigy import check_prodigy_groups

    config = _config(optimizer="Prodigy", unet_lr=1.0, text_encoder_lr=0.5)
    with pytest.raises(TrainError, match=r"pivotal 0.5, unet 1\b"):
        check_prodigy_groups(config, [{"name": "pivotal", "lr": 0.5}, {"name": "unet", "lr": 1.0}])
    check_prodigy_groups(config, [{"name": "pivotal", "lr": 1.0}, {"name": "unet", "lr": 1.0}])  # equal: fine
    check_prodigy_groups(config, [{"name": "pivotal", "lr": 0.0}, {"name": "unet", "lr": 1.0}])  # frozen: fine


def test_prodigy_with_a_small_lr_gets_a_warning_that_says_why():
    config = _config(pivotal_tuning=False, optimizer="Prodigy", unet_lr=1e-4, text_encoder_lr=1e-4)
    (warning,) = config_warnings(config)
    assert "far from 1.0" in warning and "estimates the step size itself" in warning
    assert config_warnings(_config(pivotal_tuning=False, optimizer="Prodigy", unet_lr=1.0, text_encoder_lr=1.0)) == []


def test_prodigy_fields_reach_the_optimizer_and_te_weight_decay_its_groups():
    from lora_trainer.train.prodigy import apply_group_weight_decay, prodigy_args

    c = _config(pivotal_tuning=False, optimizer="Prodigy", unet_lr=1.0, text_encoder_lr=1.0, prodigy_d_coef=0.5,
                prodigy_safeguard_warmup=True, prodigy_weight_decay=1e-4, prodigy_te_weight_decay=1e-3)
    args = prodigy_args(c)
    assert args == {"d_coef": 0.5, "safeguard_warmup": True, "use_bias_correction": False, "decouple": True,
                    "weight_decay": 1e-4}
    groups = apply_group_weight_decay(c, [{"name": "textencoder", "params": []}, {"name": "unet", "params": []}])
    assert groups[0]["weight_decay"] == 1e-3 and "weight_decay" not in groups[1]
    c.optimizer_args = {"d_coef": 2.0}
    assert prodigy_args(c)["d_coef"] == 2.0  # optimizer_args win


def test_the_table_is_found_under_the_webuis_hijack_wrapper():
    """In the webui, sd_hijack wraps every token embedding in `EmbeddingsWithFixes(wrapped, …)` (no `.weight`)."""

    class EmbeddingsWithFixes(torch.nn.Module):  # the webui's shape: the table sits in `.wrapped`
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, input_ids):
            return self.wrapped(input_ids)

    model = build_tiny_model("sdxl")
    adapter = get_adapter(model)
    tables = [token_table(part) for part in adapter.text_encoders]
    te1, te2 = (part.embedder for part in adapter.text_encoders)
    te1.transformer.text_model.embeddings.token_embedding = EmbeddingsWithFixes(tables[0])
    te2.model.token_embedding = EmbeddingsWithFixes(tables[1])
    assert [token_table(part) for part in adapter.text_encoders] == tables
    emb = PivotalEmbeddings.create(adapter, _config(pivotal_init="dog"))
    assert torch.equal(emb.embedding.params["clip_g"][0].detach(), tables[1].weight[token_ids(adapter, "dog")[0]])
