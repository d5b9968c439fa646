"""Any open_clip model (``--model open_clip --weights DIR_OR_FILE [--arch NAME] [--name NAME]``).

Weights, in the formats open_clip publishes:
- a Hugging Face-layout folder: ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) beside
  ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``;
- a state dict file with ``--arch`` (an architecture open_clip knows, e.g. ``ViT-B-32``, or a model-config
  JSON file);
- an OpenAI CLIP checkpoint of any size, TorchScript or state dict (CheXzero's, for one): the architecture
  is read from the tensors' shapes, as open_clip's ``build_model_from_openai_state_dict`` does;
- ``hf-hub:org/repo`` when online.
Preprocessing is the checkpoint's own ``preprocess_cfg`` (open_clip's eval transform), never guessed;
weights load through safetensors or a weights-only unpickler. Embeddings are L2-normalised.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from embedkit.errors import EmbedkitError
from embedkit.models.base import Encoder, ImageTower, LoraTargets
from embedkit.models.checkpoints import file_digest, load_state_dict, state_digest, strict_load
from embedkit.models.registry import ModelSpec, register

CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")
TINY_CFG = {"embed_dim": 32, "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
TINY_PREPROCESS = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                   "interpolation": "bicubic", "resize_mode": "shortest"}


class OpenClipPreprocess:
    """open_clip's eval transform for a ``preprocess_cfg`` (size, mean, std, interpolation, resize mode),
    built once."""

    def __init__(self, cfg: dict):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.cfg = dict(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))
        fields = PreprocessCfg.__dataclass_fields__
        self.transform = image_transform_v2(PreprocessCfg(**{k: v for k, v in self.cfg.items() if k in fields}),
                                            is_train=False)

    def __call__(self, img):
        return self.transform(img)

    def describe(self) -> dict:
        return {"kind": "open_clip", **self.cfg}


def _encoder(model, name: str, tokenizer, description: dict) -> Encoder:
    from open_clip.model import get_model_preprocess_cfg

    model.eval()
    preprocess_cfg = get_model_preprocess_cfg(model)

    def encode_texts(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts).to(next(model.parameters()).device)
        return torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)

    dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") and model.text_projection is not None \
        else int(model.visual.output_dim)
    return Encoder(
        name=name, model=model, embed_dim=dim, preprocess=OpenClipPreprocess(preprocess_cfg),
        image_tower=ImageTower(model.visual, lambda m, x: torch.nn.functional.normalize(m(x), dim=-1)),
        text_encoder=encode_texts if tokenizer is not None else None, normalized=True,
        description={"family": "open_clip", **description}, lora_targets=LoraTargets.discover(model.visual),
        logit_scale=float(model.logit_scale.detach().exp()),
    )


def load(weights: Path | None, tokenizer: Path | None, tiny: bool, *, arch: str | None = None,
         name: str = "open_clip") -> Encoder:
    """From a HF-layout folder, a state dict with ``arch``, an OpenAI checkpoint, or ``hf-hub:`` online."""
    import open_clip

    if weights is None:
        raise EmbedkitError("open_clip: give --weights (a folder with open_clip_config.json, a state dict with "
                            "--arch, an OpenAI CLIP checkpoint, or hf-hub:org/repo when online)")
    if str(weights).startswith("hf-hub:"):
        return _from_hub(str(weights), name)
    weights = Path(weights)
    if weights.is_dir():
        cfg, file = _read_folder(weights)
        with _no_random_init_warning():
            model = open_clip.create_model(f"local-dir:{weights}", load_weights=False)
        tok = open_clip.get_tokenizer(f"local-dir:{weights}")
        described = {"config": cfg}
    elif arch is not None:
        arch_name = _arch(arch)
        with _no_random_init_warning():
            model, file = open_clip.create_model(arch_name, pretrained=None), weights
        tok = open_clip.get_tokenizer(arch_name)
        described = {"arch": arch_name}
    else:
        return _openai(weights, name)
    state = {k: v for k, v in load_state_dict(file).items() if k not in OPENAI_ONLY_KEYS}
    strict_load(model, state, source=file, tolerated=("attn_mask",))
    return _encoder(model, name, tok, described | {"weights": file_digest(file)})


def _openai(file: Path, name: str) -> Encoder:
    """An OpenAI-layout CLIP checkpoint (TorchScript or state dict), its size read from the shapes."""
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict

    state = load_state_dict(file)
    if "visual.conv1.weight" not in state and "visual.layer1.0.conv1.weight" not in state:
        raise EmbedkitError(f"{file}: not an OpenAI CLIP checkpoint (no visual.conv1 or visual.layer1); for another "
                            "open_clip state dict give --arch NAME, or pass the model's folder")
    model = build_model_from_openai_state_dict({k: v.float() for k, v in state.items()}, cast_dtype=torch.float32)
    model.float()
    return _encoder(model, name, open_clip.get_tokenizer("ViT-B-32"),
                    {"arch": "openai-layout", "image_size": model.visual.image_size, "weights": file_digest(file)})


def _arch(arch: str) -> str:
    """A built-in architecture name, or a model-config JSON registered under its file stem."""
    import open_clip

    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise EmbedkitError(f"--arch {arch}: file not found")
        open_clip.add_model_config(path)
        return path.stem
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=1)
        raise EmbedkitError(f"--arch {arch!r}: open_clip has no such architecture"
                            + (f" (did you mean {close[0]}?)" if close else "; see open_clip.list_models()"))
    return arch


def _read_folder(folder: Path) -> tuple[dict, Path]:
    path = folder / CONFIG
    if not path.is_file():
        raise EmbedkitError(f"{folder}: no {CONFIG}; an open_clip folder holds it beside its weights "
                            f"({' or '.join(WEIGHT_FILES)})")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EmbedkitError(f"{path}: not valid JSON ({exc})") from None
    if "model_cfg" not in cfg:
        raise EmbedkitError(f"{path}: no model_cfg; not an open_clip config")
    for f in WEIGHT_FILES:
        if (folder / f).is_file():
            return cfg, folder / f
    raise EmbedkitError(f"{folder}: no {' or '.join(WEIGHT_FILES)} beside {CONFIG}")


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _no_random_init_warning():
    """open_clip warns "Model initialized randomly" when it builds an architecture without weights; the file's
    weights are loaded strictly right after (tested against open_clip's own loading), so the warning only alarms."""
    drop = _DropRandomInit()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _from_hub(model_id: str, name: str) -> Encoder:
    from embedkit.models.download import offline

    if offline():
        raise EmbedkitError(f"open_clip: offline; download {model_id[7:]} from Hugging Face and pass --weights FOLDER")
    import open_clip

    try:
        model = open_clip.create_model(model_id)
    except Exception as exc:
        raise EmbedkitError(f"open_clip: could not fetch {model_id} ({str(exc).splitlines()[0][:120]})") from None
    return _encoder(model, name, open_clip.get_tokenizer(model_id), {"hub": model_id})


def tiny(seed: int) -> Encoder:
    """A small open_clip ViT with its own preprocess config (for the tests and the demo)."""
    import open_clip
    from open_clip.model import CLIP, set_model_preprocess_cfg

    torch.manual_seed(seed)
    cfg = {k: v for k, v in TINY_CFG.items() if k != "quick_gelu"}
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"], quick_gelu=True)
    set_model_preprocess_cfg(model, TINY_PREPROCESS)
    return _encoder(model, "open_clip-tiny", open_clip.get_tokenizer("ViT-B-32"),
                    {"config": {"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS}, "weights": state_digest(model)})


def save(encoder: Encoder, path: Path) -> Path:
    """The Hugging Face layout: ``path/open_clip_config.json`` + ``path/open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    config = encoder.description.get("config") or {"model_cfg": TINY_CFG, "preprocess_cfg": TINY_PREPROCESS}
    (path / CONFIG).write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(path / WEIGHT_FILES[0]))
    return path


register(ModelSpec(
    name="open_clip", family="any open_clip model (generic; --arch, --name)", embed_dim=0,
    preprocessing="the checkpoint's own preprocess_cfg (open_clip eval transform)",
    weight_formats="HF folder (open_clip_config.json + open_clip_model.safetensors|open_clip_pytorch_model.bin), "
                   "a state dict with --arch, an OpenAI CLIP checkpoint of any size (TorchScript or state dict), "
                   "hf-hub:org/repo online",
    source="https://github.com/mlfoundations/open_clip", load=load, tiny=tiny, save=save, generic=True,
))
