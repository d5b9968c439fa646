"""The phantom dataset: generated chest radiographs with the structure of NIH 6x200.

No real X-rays can be downloaded here, so the demo and tests use drawings with lungs,
mediastinum, heart, ribs, diaphragm and noise; each finding has its own visual signature,
demographics change anatomy (body size, bone density, breast shadow), and ``bias`` plants
a known unfairness: the finding signature is fainter for one group by a given fraction.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from embedkit.data.registry import Builder, Summary, option, register
from embedkit.data.splits import patient_split
from embedkit.errors import EmbedkitError
from embedkit.manifest import AGE_GROUPS, SEXES, STUDY_CLASSES, age_group, write_manifest
from embedkit.tasks import NO_FINDING, SEPARATOR

METADATA_FILE = "phantom.json"
SITES = ("A", "B", "C")   # the hospital / scanner a patient was imaged at: a third, three-group attribute


@dataclass(frozen=True)
class Bias:
    """Finding signature reduced by ``strength`` (0..1) for rows whose ``attribute`` equals ``group``."""

    attribute: str
    group: str
    strength: float

    @classmethod
    def parse(cls, text: str) -> "Bias":
        """Parse ``ATTR=GROUP:STRENGTH``, e.g. ``sex=F:0.6``, ``age_group=old:0.5`` or ``site=C:0.5``."""
        try:
            attr_group, strength = text.split(":")
            attribute, group = attr_group.split("=")
            bias = cls(attribute.strip(), group.strip(), float(strength))
        except ValueError:
            raise EmbedkitError(f"--bias {text!r}: expected ATTR=GROUP:STRENGTH, e.g. sex=F:0.6") from None
        valid = {"sex": SEXES, "age_group": AGE_GROUPS, "site": SITES}
        if bias.attribute not in valid or bias.group not in valid[bias.attribute]:
            raise EmbedkitError(f"--bias {text!r}: attribute must be sex (M|F), age_group (young|old) or site (A|B|C)")
        if not 0.0 <= bias.strength <= 1.0:
            raise EmbedkitError(f"--bias {text!r}: strength must lie in [0, 1]")
        return bias

    def factor(self, row: dict) -> float:
        """Multiplier of the finding signature for a patient's row (sex, age, site)."""
        value = age_group(int(row["age"])) if self.attribute == "age_group" else row[self.attribute]
        return 1.0 - self.strength if value == self.group else 1.0


@dataclass
class PhantomSpec:
    """Everything that determines a phantom dataset; written beside it as phantom.json."""

    per_group: int = 50
    size: int = 224
    seed: int = 0
    classes: tuple[str, ...] = STUDY_CLASSES
    bias: list[Bias] = field(default_factory=list)
    duplicates: int = 0        # leakage to find: test images copied under a new id and patient into train
    near_duplicates: int = 0   # ... and altered copies of further test images (resized, re-encoded as JPEG)
    generator: int = 2         # the drawing and columns' version (2: patient sites); a change regenerates
    task: str = "multiclass"   # multiclass: one finding per image; multilabel: findings co-occur, or none


def _plant_duplicates(out: Path, rows: list[dict], n: int, n_patient: int) -> dict[str, str]:
    """Copy the first ``n`` test images byte for byte into train under new ids and patients (the
    leakage the audit must find); returns {copy id: original id}."""
    import shutil

    originals = [r for r in rows if r["split"] == "test"][:n]
    copies = {}
    for k, r in enumerate(originals):
        image_id = f"dup{k:04d}"
        shutil.copyfile(out / r["path"], out / "images" / f"{image_id}.png")
        rows.append(dict(r, image_id=image_id, path=f"images/{image_id}.png", split="train",
                         patient_id=f"P{n_patient + 1 + k:05d}"))
        copies[image_id] = r["image_id"]
    return copies


def _plant_near_copies(out: Path, rows: list[dict], n: int, skip: int, n_patient: int) -> dict[str, str]:
    """Copy ``n`` further test images (after the first ``skip``) into train as near, not byte-identical, copies
    under new ids and patients: alternately resized (up 6 %, back down, bicubic) and re-encoded as JPEG
    (quality 92, decoded back to PNG). Returns {copy id: original id}."""
    import io

    originals = [r for r in rows if r["split"] == "test" and not r["image_id"].startswith("dup")][skip:skip + n]
    copies = {}
    for k, r in enumerate(originals):
        image_id = f"near{k:04d}"
        img = Image.open(out / r["path"]).convert("L")
        if k % 2 == 0:
            side = img.size[0]
            img = img.resize((round(side * 1.06),) * 2, Image.BICUBIC).resize((side, side), Image.BICUBIC)
        else:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=92)
            img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
        img.save(out / "images" / f"{image_id}.png", compress_level=1)
        rows.append(dict(r, image_id=image_id, path=f"images/{image_id}.png", split="train",
                         patient_id=f"P{n_patient + 1 + k:05d}"))
        copies[image_id] = r["image_id"]
    return copies


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: random cells upsampled bicubically."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(img)


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _soft(d: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """1 inside (d < 1), 0 outside, with a soft edge."""
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def draw_radiograph(rng: np.random.Generator, size: int, label: str, sex: str, age: int, strength: float) -> np.ndarray:
    """One 8-bit grayscale radiograph; ``strength`` scales the finding's signature; ``label`` is one finding,
    or several joined by | (``No Finding``: none)."""
    labels = label.split("|")
    y, x = np.mgrid[0:1:complex(0, size), 0:1:complex(0, size)].astype(np.float32)
    body = (1.0 if sex == "M" else 0.9) * rng.uniform(0.95, 1.05)
    bone = (0.32 if age < 60 else 0.17) * rng.uniform(0.85, 1.15)
    cx, cy = 0.5 + rng.normal(0, 0.015), 0.52 + rng.normal(0, 0.015)

    img = 0.04 + 0.30 * _soft(_ellipse(x, y, cx, cy + 0.05, 0.46 * body, 0.55), 0.3)  # soft tissue
    lung_rx, lung_ry, lung_dx = 0.15 * body, 0.30, 0.17 * body
    lungs = [(cx - lung_dx, cy - 0.02), (cx + lung_dx, cy - 0.02)]
    lung_mask = np.zeros_like(x)
    for lx, ly in lungs:
        lung_mask = np.maximum(lung_mask, _soft(_ellipse(x, y, lx, ly, lung_rx, lung_ry), 0.15))
    markings = 0.05 * _smooth_noise(rng, size, 24)
    img = img - lung_mask * (0.22 - markings)
    if sex == "F":  # breast shadows over the lower lung fields
        for lx, _ in lungs:
            img += 0.07 * _soft(_ellipse(x, y, lx, cy + 0.24, 0.14, 0.10), 0.6)
    # ribs: curved bands across the thorax
    ribs = np.sin(2 * np.pi * (y + 0.9 * (x - cx) ** 2) / 0.075 + rng.uniform(0, 6.3))
    img += bone * lung_mask * np.clip(ribs - 0.55, 0, None) * 1.6
    img += bone * 0.8 * _soft(_ellipse(x, y, cx, cy, 0.025, 0.45), 0.5)  # spine

    heart_scale = 1.0 + (0.38 * strength if "Cardiomegaly" in labels else 0.0)
    heart_rx = 0.11 * body * heart_scale * rng.uniform(0.95, 1.05)
    img += 0.40 * _soft(_ellipse(x, y, cx + 0.04 * heart_scale, cy + 0.12, heart_rx, 0.12 * np.sqrt(heart_scale)), 0.2)
    img += 0.30 * _soft(_ellipse(x, y, cx, cy - 0.15, 0.05, 0.18), 0.4)  # mediastinum
    if age >= 60:
        img += 0.12 * _soft(_ellipse(x, y, cx - 0.04, cy - 0.22, 0.025, 0.02), 0.4)  # aortic knob
    img += 0.25 * _soft(_ellipse(x, y, cx, cy + 0.42, 0.42 * body, 0.14), 0.2)  # diaphragm / abdomen

    side = rng.integers(0, 2)
    for label in labels:
        img = _finding(rng, img, label, strength, x, y, lungs, side, lung_rx, lung_ry, lung_mask, markings, size)
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _finding(rng, img, label, strength, x, y, lungs, side, lung_rx, lung_ry, lung_mask, markings, size) -> np.ndarray:
    """``img`` with one finding's signature drawn on the lung of ``side`` (Cardiomegaly: the heart, drawn before)."""
    lx, ly = lungs[side]
    if label == "Effusion":  # fluid level blunting the costophrenic angle
        level = ly + lung_ry * (0.75 - 0.45 * strength)
        fluid = np.clip((y - level) / 0.02, 0, 1) * _soft(_ellipse(x, y, lx, ly, lung_rx * 1.1, lung_ry * 1.1), 0.1)
        img += 0.30 * strength * fluid
    elif label == "Atelectasis":  # collapsed upper lobe: a dense wedge
        wedge = _soft(_ellipse(x, y, lx + (0.04 if side else -0.04), ly - 0.15, 0.09, 0.07), 0.3)
        img += 0.28 * strength * wedge * lung_mask
    elif label == "Pneumothorax":  # lateral lung edge without markings, a thin pleural line
        edge_x = lx + (1 if side else -1) * lung_rx * (0.75 - 0.4 * strength)
        outer = (x > edge_x) if side else (x < edge_x)
        region = outer * lung_mask * (y < ly + 0.1)
        img -= region * (markings + 0.06 * strength)
        img += 0.22 * strength * np.exp(-(((x - edge_x) / 0.004) ** 2)) * lung_mask * (y < ly + 0.1)
    elif label == "Edema":  # bilateral perihilar haze
        haze = sum(_soft(_ellipse(x, y, hx, hy + 0.02, 0.12, 0.16), 0.9) for hx, hy in lungs)
        img += 0.20 * strength * haze * lung_mask
    elif label == "Consolidation":  # a dense, irregular patch in one lung
        py = ly + rng.uniform(-0.1, 0.15)
        patch = _soft(_ellipse(x, y, lx, py, 0.07, 0.06), 0.5) * (0.7 + 0.3 * _smooth_noise(rng, size, 12))
        img += 0.35 * strength * patch * lung_mask
    return img


def _draw_patients(rng: np.random.Generator, n_images: int) -> list[int]:
    """Image counts per patient (1-3, mostly 1) adding up to ``n_images``."""
    counts: list[int] = []
    while sum(counts) < n_images:
        counts.append(min(int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])), n_images - sum(counts)))
    return counts


TASKS = ("multiclass", "multilabel")
PREVALENCE = 0.22          # multilabel: each finding's chance per patient (Effusion more likely with Edema)


def _patients(spec: PhantomSpec) -> tuple[list[dict], list[tuple], int]:
    """The rows (one per image; a patient has 1-3 images with one sex, age band, site and findings), the
    split's strata and the number of patients. Multiclass: ``per_group`` images per (class, sex, band);
    multilabel: as many images per (sex, band) as the multiclass phantom has, findings drawn per patient."""
    rng = np.random.default_rng(spec.seed)
    site_rng = np.random.default_rng([spec.seed, 7])   # its own stream: the images are those of a phantom without sites
    labels = spec.classes if spec.task == "multiclass" else (None,)
    per_cell = spec.per_group * (1 if spec.task == "multiclass" else len(spec.classes))
    rows, cells, n_patient = [], [], 0
    for label in labels:
        for sex in SEXES:
            for band in AGE_GROUPS:
                for count in _draw_patients(rng, per_cell):
                    n_patient += 1
                    age0 = int(rng.integers(20, 60) if band == "young" else rng.integers(60, 90))
                    site = SITES[int(site_rng.integers(0, len(SITES)))]
                    found = label or _findings(rng, spec.classes)
                    for k in range(count):
                        age = min(age0 + k, 59) if band == "young" else age0 + k
                        rows.append({"patient_id": f"P{n_patient:05d}", "label": found, "sex": sex, "age": age, "site": site})
                        cells.append((found if label else found != NO_FINDING, sex, band))
    return rows, cells, n_patient


def _findings(rng: np.random.Generator, classes: tuple[str, ...]) -> str:
    """A patient's findings joined by | in class order (``No Finding`` for none); Effusion co-occurs with Edema."""
    drawn = rng.random(len(classes)) < PREVALENCE
    if "Edema" in classes and "Effusion" in classes and drawn[classes.index("Edema")]:
        drawn[classes.index("Effusion")] |= rng.random() < 0.5
    return SEPARATOR.join(c for c, d in zip(classes, drawn) if d) or NO_FINDING


def make_phantom(out: str | Path, spec: PhantomSpec) -> Path:
    """Write ``out/manifest.csv``, ``out/images/*.png`` and ``out/phantom.json``; returns the manifest path."""
    if spec.per_group < 5:
        raise EmbedkitError("--per-group must be at least 5 so every split gets each cell")
    if spec.size < 16:
        raise EmbedkitError("--size must be at least 16 pixels")
    if spec.task not in TASKS:
        raise EmbedkitError(f"--task {spec.task!r}: choose {', '.join(TASKS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, cells, n_patient = _patients(spec)
    splits = patient_split([r["patient_id"] for r in rows], cells, seed=spec.seed)
    for i, (row, split) in enumerate(zip(rows, splits)):
        image_id = f"ph{i:06d}"
        strength = float(np.prod([b.factor(row) for b in spec.bias]))
        pixels = draw_radiograph(np.random.default_rng([spec.seed, i]), spec.size, row["label"], row["sex"], row["age"], strength)
        Image.fromarray(pixels, mode="L").save(out / "images" / f"{image_id}.png", compress_level=1)
        row.update(image_id=image_id, path=f"images/{image_id}.png", split=split, finding_strength=round(strength, 4))
    copies = _plant_duplicates(out, rows, spec.duplicates, n_patient)
    near = _plant_near_copies(out, rows, spec.near_duplicates, spec.duplicates, n_patient + len(copies))
    meta = asdict(spec) | {"n_images": len(rows), "n_patients": n_patient + len(copies) + len(near),
                           "duplicates_of": copies, "near_duplicates_of": near}
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return write_manifest(out / "manifest.csv", rows, extra_columns=("site", "finding_strength"))


@dataclass(kw_only=True)
class Options:
    per_group: int = option(PhantomSpec.per_group, help="Images per (class, sex, age band) cell.", min=5)
    size: int = option(PhantomSpec.size, help="Image side in pixels.", min=16)
    seed: int = option(PhantomSpec.seed, help="Seed of the generated images and the split.", min=0)
    bias: list[str] = option([], help="Plant unfairness: ATTR=GROUP:STRENGTH, e.g. sex=F:0.6 (repeatable).")
    duplicates: int = option(PhantomSpec.duplicates, help="Plant leakage: copy this many test images into train under "
                                                          "new ids.", min=0)
    near_duplicates: int = option(PhantomSpec.near_duplicates, help="Plant near copies: copy this many further test "
                                  "images into train resized or re-encoded as JPEG (the audit must find them).", min=0)
    task: str = option(PhantomSpec.task, help="multiclass: one finding per image; multilabel: findings co-occur "
                                              "(label: findings joined by |, No Finding for none).")

    def spec(self) -> PhantomSpec:
        return PhantomSpec(per_group=self.per_group, size=self.size, seed=self.seed, duplicates=self.duplicates,
                           near_duplicates=self.near_duplicates,
                           bias=[Bias.parse(b) for b in self.bias], task=self.task)


def _run(opts: Options, out: Path) -> Summary:
    from embedkit.data.build import split_table

    spec = opts.spec()
    manifest = make_phantom(out, spec)
    lines = ["planted bias: " + ", ".join(f"{b.attribute}={b.group} fainter by {b.strength:g}" for b in spec.bias)]
    return Summary(manifest, tables=[split_table(manifest)], lines=lines if spec.bias else [])


def changed(opts: Options, manifest: Path) -> str:
    """Why the phantom beside ``manifest`` no longer matches ``opts`` ('' when it does): its phantom.json differs."""
    meta = manifest.parent / METADATA_FILE
    if not meta.is_file():
        return f"no {METADATA_FILE} beside the manifest"
    recorded, wanted = json.loads(meta.read_text()), json.loads(json.dumps(asdict(opts.spec())))
    default = json.loads(json.dumps(asdict(PhantomSpec())))
    recorded = {k: recorded.get(k, default[k]) for k in wanted}        # a key added since: its default
    diff = [f"{k} {recorded[k]} → {v}" for k, v in wanted.items() if recorded[k] != v]
    return "phantom settings changed: " + "; ".join(diff) if diff else ""


register(Builder("phantom", "Generate the phantom chest X-ray dataset (the embedded default for demo and tests).",
                 Options, _run, folder=True, changed=changed))
