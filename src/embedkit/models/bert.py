"""BERT pieces shared by the text towers: offline configs and local tokenizers."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from embedkit.errors import EmbedkitError

# Bio_ClinicalBERT (MedCLIP, GLoRIA): BERT-base with the cased 28,996-entry vocab.
CLINICAL_BERT = {"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0}
# BiomedBERT (PubMedBERT) abstract, uncased (BiomedCLIP's text tower).
BIOMED_BERT = dict(CLINICAL_BERT, vocab_size=30522)
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0}
CLINICAL_TOKENIZER = ("the Bio_ClinicalBERT tokenizer (vocab.txt from https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT); "
                      "pass its folder with --tokenizer DIR")


def bert_config(values: dict):
    """A transformers BertConfig from plain values (hidden states on: the poolers need them)."""
    from transformers import BertConfig

    return BertConfig(**values, output_hidden_states=True)


def load_tokenizer(folder: Path | None, *, what: str = CLINICAL_TOKENIZER):
    """A BERT WordPiece tokenizer from a local folder, never from the network.

    Without a tokenizer_config.json it lower-cases, as AutoTokenizer did for Bio_ClinicalBERT
    when MedCLIP and GLoRIA were trained.
    """
    from transformers import BertTokenizerFast

    if folder is None or not (Path(folder) / "vocab.txt").is_file():
        where = f" ({folder} has no vocab.txt)" if folder is not None else ""
        raise EmbedkitError(f"text encoding needs {what}{where}")
    return BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def make_vocab(texts: list[str]) -> list[str]:
    """A small valid WordPiece vocab for tiny models: specials, the words of ``texts``, characters."""
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    return vocab + [w for w in words if w not in vocab]


def save_tokenizer(folder: Path, vocab: list[str]) -> None:
    """Write Hugging Face tokenizer files (vocab.txt, tokenizer.json, configs) for ``vocab``."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))


@cache
def tiny_tokenizer() -> Path:
    """A small WordPiece tokenizer (the prompts' words plus characters) for the tiny variants, made once per process."""
    import tempfile

    from embedkit.prompts import all_prompt_texts

    folder = Path(tempfile.mkdtemp(prefix="embedkit-tiny-tokenizer-"))
    save_tokenizer(folder, make_vocab(all_prompt_texts()))
    return folder


def tiny_vocab_size() -> int:
    return len((tiny_tokenizer() / "vocab.txt").read_text().splitlines())


def copy_tokenizer(source: Path | None, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy tokenizer files next to saved weights (tiny variants ship theirs)."""
    if source is None:
        return
    target.mkdir(parents=True, exist_ok=True)
    for f in Path(source).iterdir():
        if f.is_file() and f.name not in skip:
            (target / f.name).write_bytes(f.read_bytes())


def write_config(folder: Path, values: dict) -> Path:
    """A BERT config.json, so open_clip's HFTextEncoder can build the tower offline."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"], **values}))
    return folder
