"""Reading published checkpoint files without running code from them.

- plain state dicts (``.bin``/``.pt``/``.pth``): ``torch.load(weights_only=True)``;
- ``.safetensors``: no pickle at all;
- OpenAI's TorchScript ``ViT-B-16.pt``: ``torch.jit.load`` (TorchScript's own restricted unpickler);
- GLoRIA's Lightning ``.ckpt``: an allow-listed unpickler that turns the pickled OmegaConf config into
  inert records, so nothing from omegaconf (or anything else) is imported or executed.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from embedkit.errors import EmbedkitError

# Keys that library versions add or drop without changing the numbers (see model-facts §1).
TOLERATED_EXTRA = ("embeddings.position_ids",)


def file_digest(path: Path) -> str:
    """SHA-256 of a file (or of all files in a folder, sorted by name)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names and bytes): identifies generated weights."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _refused(path: Path, exc: Exception) -> EmbedkitError:
    return EmbedkitError(
        f"{path}: refused to load: the file holds pickled objects outside the weights allow-list "
        f"({str(exc).splitlines()[0][:200]}). It may be damaged or malicious; download it again from the "
        "official source."
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``.safetensors`` or a weights-only pickle; unwraps ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise EmbedkitError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        with warnings.catch_warnings():   # OpenAI's TorchScript archives: torch warns, then raises (handled below)
            warnings.filterwarnings("ignore", "'torch.load' received a zip file that looks like a TorchScript")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError… on non-checkpoint bytes
        if "TorchScript" in str(exc):
            return load_torchscript_state_dict(path)
        raise EmbedkitError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EmbedkitError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (OpenAI's original CLIP files)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():   # torch deprecates TorchScript, but OpenAI's files are published in it
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise _refused(path, exc) from None
    return {k: v for k, v in module.state_dict().items()}


class _Record:
    """Inert stand-in for an allow-listed class: keeps constructor args and pickled state."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state


def _record_class(module: str, name: str) -> type:
    return type(name, (_Record,), {"__module__": f"embedkit.inert.{module}"})


_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor"), ("collections", "OrderedDict"), ("torch", "Size"),
    ("torch", "FloatStorage"), ("torch", "LongStorage"), ("torch", "HalfStorage"), ("torch", "IntStorage"),
    ("torch", "BFloat16Storage"), ("torch", "DoubleStorage"), ("torch", "ByteStorage"), ("torch", "BoolStorage"),
    ("torch", "float32"), ("torch", "int64"), ("torch", "float16"), ("torch", "bfloat16"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
}
# OmegaConf's classes as pickled by omegaconf 2.0-2.4, plus the typing objects its metadata holds.
_INERT_PREFIXES = ("omegaconf.",)
_INERT_GLOBALS = {("typing", "Any"), ("pathlib", "PosixPath")}
_PLAIN_GLOBALS = {("builtins", "dict"), ("builtins", "list"), ("builtins", "object"), ("copyreg", "_reconstructor"),
                  ("collections", "defaultdict")}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # protocol-2 names
        if (module, name) in _TORCH_GLOBALS or (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(_INERT_PREFIXES) or (module, name) in _INERT_GLOBALS:
            return _record_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


class _SafePickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an Unpickler, load and the error type."""

    Unpickler = _AllowListUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "embedkit_safe_pickle"

    @staticmethod
    def load(fh, **kwargs):
        return _AllowListUnpickler(fh, **kwargs).load()


def load_lightning_checkpoint(path: str | Path) -> dict:
    """A PyTorch-Lightning checkpoint with an OmegaConf config, read through the allow-list."""
    path = Path(path)
    if not path.is_file():
        raise EmbedkitError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_SafePickleModule)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from None
    except Exception as exc:
        raise EmbedkitError(f"{path}: not a readable Lightning checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise EmbedkitError(f"{path}: expected a Lightning checkpoint with a 'state_dict' entry")
    return ckpt


def plain_config(obj):
    """Turn OmegaConf records (DictConfig/ListConfig/ValueNode state) into dicts, lists and values."""
    if isinstance(obj, _Record):
        state = getattr(obj, "state", None) or {}
        if isinstance(state, dict) and "_content" in state:
            return plain_config(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return plain_config(state["_val"])
        return None
    if isinstance(obj, dict):
        return {k: plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(v) for v in obj]
    return obj


def strict_load(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: Path | str,
    rename: Callable[[str], str] | None = None,
    tolerated: Iterable[str] = TOLERATED_EXTRA,
) -> None:
    """Load exactly: drop tolerated version-drift keys the module lacks, else every missing,
    unexpected or mis-shaped key is an error that names the keys."""
    expected = module.state_dict()
    state = OrderedDict((rename(k) if rename else k, v) for k, v in state.items())
    state = OrderedDict((k, v) for k, v in state.items() if k in expected or not k.endswith(tuple(tolerated)))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}")
    if problems:
        raise EmbedkitError(f"{source}: does not match the {type(module).__name__} architecture — " + "; ".join(problems)
                            + ". Is it the right file for this --model?")
    module.load_state_dict(state, strict=True)
