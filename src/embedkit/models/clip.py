"""OpenAI CLIP ViT-B/16 through open_clip (QuickGELU, as the OpenAI weights were trained).

Weights: an open_clip state dict (``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors``)
or OpenAI's TorchScript ``ViT-B-16.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, load_state_dict, state_digest, strict_load
from embedkit.models.images import ClipPreprocess
from embedkit.models.registry import ModelSpec, register

FULL = {"embed_dim": 512, "vision": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "head_width": 64},
        "text": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
TINY = {"embed_dim": 32, "vision": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")
DOWNLOAD = ("OpenAI's ViT-B-16.pt (https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt) "
            "or open_clip_pytorch_model.bin from the Hugging Face repo timm/vit_base_patch16_clip_224.openai")
# peft's LoRA MultiheadAttention adapts the fused q/k/v ``in_proj_weight`` and ``out_proj`` together
# (a plain ``out_proj`` target never trains: MultiheadAttention reads its weight directly).
# The patch embedding (conv1) is a Conv2d peft adapts as a LoRA conv; the final projection ``proj``
# is a raw parameter (``x @ proj``), reached through peft's target_parameters.
LORA = LoraTargets(modules=("conv1", "attn", "c_fc", "c_proj"), parameters=("proj",))


def build(cfg: dict):
    """The open_clip CLIP module for ``cfg`` (random weights, nothing downloaded)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision"]),
                text_cfg=CLIPTextCfg(**cfg["text"]), quick_gelu=True)


def encode_text_shortened(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens, normalize=True)`` on the tokens cut after the longest prompt of the
    batch: the text transformer is causal and pools at the EOT token, so the padding after it changes
    nothing (cosine >= 0.99999 to the full context, tested) but costs most of the time."""
    from open_clip.transformer import text_global_pool

    length = int((tokens != 0).sum(1).max())  # 0 pads; every prompt has its EOT before the cut
    x = model.token_embedding(tokens[:, :length]).to(model.transformer.get_cast_dtype())
    x = x + model.positional_embedding[:length].to(x.dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens[:, :length], model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return torch.nn.functional.normalize(x @ model.text_projection, dim=-1)


def _encoder(model, cfg: dict, name: str, weights_digest: str) -> Encoder:
    import open_clip

    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")

    def encode_texts(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, context_length=cfg["text"]["context_length"]).to(model.logit_scale.device)
        return encode_text_shortened(model, tokens)

    return Encoder(
        name=name, model=model, embed_dim=cfg["embed_dim"], preprocess=ClipPreprocess(cfg["vision"]["image_size"]),
        image_tower=ImageTower(model.visual, lambda m, x: torch.nn.functional.normalize(m(x), dim=-1)),
        text_encoder=encode_texts, normalized=True,
        description={"family": "clip", "arch": cfg, "quick_gelu": True, "weights": weights_digest,
                     "text": "open_clip BPE, EOT token, ln_final, text_projection"},
        lora_targets=LORA, logit_scale=float(model.logit_scale.detach().exp()),
    )


def load(weights: Path | None, tokenizer: Path | None, tiny: bool) -> Encoder:
    """CLIP from an open_clip state dict or an OpenAI TorchScript archive."""
    if weights is None:
        return _from_hub()
    cfg = TINY if tiny else FULL
    state = load_state_dict(weights)
    state = {k: v.float() for k, v in state.items() if k not in OPENAI_ONLY_KEYS}
    model = build(cfg)
    strict_load(model, state, source=weights, tolerated=("attn_mask",))
    return _encoder(model, cfg, "clip-tiny" if tiny else "clip", file_digest(weights))


def _from_hub() -> Encoder:
    from embedkit.models.download import offline

    if offline():
        raise EmbedkitError(f"clip: offline; download {DOWNLOAD} and pass --weights PATH")
    try:
        import open_clip

        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained="openai")
    except Exception as exc:
        raise EmbedkitError(f"clip: could not fetch the OpenAI weights ({str(exc).splitlines()[0][:120]}). "
                            f"Offline, download {DOWNLOAD} and pass --weights PATH") from None
    return _encoder(model, FULL, "clip", "open_clip:ViT-B-16-quickgelu/openai")


def tiny(seed: int) -> Encoder:
    torch.manual_seed(seed)
    model = build(TINY)
    return _encoder(model, TINY, "clip-tiny", state_digest(model))


def save(encoder: Encoder, path: Path) -> Path:
    """Published open_clip format: a plain state dict (``.bin``) or ``.safetensors``."""
    model = encoder.model
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


register(ModelSpec(
    name="clip", family="OpenAI CLIP ViT-B/16 (open_clip, QuickGELU)", embed_dim=512,
    preprocessing="RGB, bicubic shortest-side 224, centre crop, CLIP mean/std",
    weight_formats="open_clip state dict (.bin/.safetensors) or OpenAI TorchScript ViT-B-16.pt",
    source=DOWNLOAD, load=load, tiny=tiny, save=save,
))
