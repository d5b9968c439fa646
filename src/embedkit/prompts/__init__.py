"""Zero-shot prompt formats: CLIP templates, GLoRIA's CheXpert generator and CXR-CLIP's lists.

Word lists are data (``lists/*.json``). Prompts are built per class; the class name "Effusion"
maps to "Pleural Effusion". The GLoRIA and CXR-CLIP generators lack Pneumothorax: its prompts
fall back to CXR-CLIP's positive report sentences ("pneumothorax.", "there is pneumothorax.", …).

Scoring (``embedkit.heads.zeroshot``): clip = cosine to the renormalised mean prompt embedding;
gloria = max over a random sample of 5 prompts per class, then each class column standardised over
the images scored (GLoRIA's ``zero_shot_classification``); cxrclip = mean cosine over 10 prompts
per class drawn afresh for every image (kakaobrain/cxr-clip ``Evaluator.zeroshot_gloria``:
``np.random.permutation(similarities)[:num_prompt]`` then ``mean``; its num_prompt options are
5, 10 or all). The two sampled formats run once per seed and are reported as mean ± sd.

Findings (binary and multi-label tasks) are scored as CheXzero scores them: a softmax over a positive and a
negative prompt side per finding. The positive side is the format's prompts above; the negative side is the
pseudo-class ``no:<finding>``: CLIP's templates filled with "no <finding>" (CheXzero's "no <finding>"), and for
GLoRIA and CXR-CLIP — whose generators have no negatives — CXR-CLIP's 24 negative report patterns ("no {x}.",
"there is no evidence of {x}.", …, ``lists/cxrclip.json``). docs/fairness.md tabulates per finding and format.
"""

from __future__ import annotations

import itertools
import json
from functools import cache
from importlib import resources

FORMATS = ("clip", "gloria", "cxrclip")
SAMPLED = {"gloria": 5, "cxrclip": 10}  # formats that sample n prompts per class (run over 10 seeds)
NAME_MAP = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening"}
NEGATIVE = "no:"        # the negative side of a finding's prompt pair, as a pseudo-class name


def _load(name: str) -> dict:
    return json.loads(resources.files("embedkit.prompts").joinpath("lists", name).read_text())


def display_name(class_name: str) -> str:
    """The finding's name as the prompt lists spell it."""
    return NAME_MAP.get(class_name, class_name)


def clip_prompts(class_name: str) -> list[str]:
    """The 80 OpenAI templates filled with the lower-cased finding name."""
    return [t.format(display_name(class_name).lower()) for t in _load("clip_templates.json")["templates"]]


def _report_fallback(class_name: str) -> list[str]:
    patterns = _load("cxrclip.json")["report_fallback"]["patterns"]
    return [p.format(x=display_name(class_name).lower()) for p in patterns]


def gloria_prompts(class_name: str) -> list[str]:
    """Every severity x subtype x location prompt in dict key order, unstripped, as GLoRIA builds them."""
    lists = _load("gloria_chexpert.json")["classes"].get(display_name(class_name))
    if lists is None:
        return _report_fallback(class_name)
    return [f"{a} {b} {c}" for a, b, c in itertools.product(*lists.values())]


def cxrclip_prompts(class_name: str) -> list[str]:
    """GLoRIA's prompts stripped and with CXR-CLIP's two typo fixes."""
    data = _load("cxrclip.json")
    if display_name(class_name) not in _load("gloria_chexpert.json")["classes"]:
        return _report_fallback(class_name)
    out = []
    for p in gloria_prompts(class_name):
        for wrong, right in data["typo_fixes"].items():
            p = p.replace(wrong, right)
        out.append(p.strip())
    return out


GENERATORS = {"clip": clip_prompts, "gloria": gloria_prompts, "cxrclip": cxrclip_prompts}


def negative_prompts(fmt: str, finding: str) -> list[str]:
    """The negative side of a finding's pair: CLIP's templates with "no <finding>"; GLoRIA's and CXR-CLIP's
    formats take CXR-CLIP's negative report patterns (their generators have none)."""
    if fmt == "clip":
        return [t.format("no " + display_name(finding).lower()) for t in _load("clip_templates.json")["templates"]]
    data = _load("cxrclip.json")
    phrase = data["phrases"].get(finding, display_name(finding).lower())
    return [p.format(x=phrase) for p in data["report_negative"]["patterns"]]


def prompt_set(fmt: str, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """All candidate prompts of a format, per class (``no:<finding>``: the negative side of its pair)."""
    return {c: negative_prompts(fmt, c[len(NEGATIVE):]) if c.startswith(NEGATIVE) else GENERATORS[fmt](c)
            for c in classes}


def text_classes(classes: tuple[str, ...]) -> tuple[str, ...]:
    """The classes a store embeds prompts for: a multiclass manifest's classes as they are; a multi-label
    manifest's (labels joining findings with |, or No Finding) its single findings and their negative sides."""
    from embedkit.tasks import NO_FINDING, SEPARATOR, findings_of

    if not any(SEPARATOR in c or c == NO_FINDING for c in classes):
        return tuple(classes)
    findings = sorted({f for c in classes for f in findings_of(c)})
    return pair_classes(findings)


def pair_classes(findings) -> tuple[str, ...]:
    """Each finding (No Finding aside: its probability derives from the others) and then its negative side."""
    from embedkit.tasks import NO_FINDING

    own = [f for f in findings if f != NO_FINDING]
    return (*own, *(NEGATIVE + f for f in own))


@cache
def all_prompt_texts() -> list[str]:
    """Every prompt of every format for the study's classes (used to build tiny vocabularies)."""
    from embedkit.manifest import STUDY_CLASSES

    return [p for fmt in FORMATS for ps in prompt_set(fmt, STUDY_CLASSES).values() for p in ps]
