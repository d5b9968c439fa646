"""What the embeddings already know, before any classifier: ``embedkit audit``.

Four questions, all from the store: how well each sensitive attribute is predicted from the frozen
embedding (``probes``), whether the groups' embeddings differ in distribution along the leading principal
components (``distribution``: Kolmogorov–Smirnov tests, FDR-controlled), which images are exact or near
duplicates across splits or patients (``duplicates``), and how the groups sit in a 2-D map of the embedding
space (``maps``). Results go to ``<runs-dir>/<dataset>/<model>/audit/`` (audit.json, pairs.csv, ks.csv,
map.png), which the report reads.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from embedkit.spec import FAIRNESS, WHERE, Count, Replicates, Where, check_bounds


@dataclass(frozen=True)
class AuditConfig:
    model: str
    manifest: Path
    cache_dir: Path = WHERE.cache_dir
    cache: Path | None = None
    runs_dir: Path = WHERE.runs_dir
    dataset: str | None = None
    attributes: str | None = FAIRNESS.attributes  # a declaration (embedkit.attributes); None: sex, age, sex*age
    n_boot: Replicates = FAIRNESS.n_boot
    n_perm: Replicates = FAIRNESS.n_perm
    threshold: float | None = None      # near-duplicate cosine; None: the distance-ratio test (duplicates.ALPHA)
    projection: str = "pca"             # the map: pca, or umap when umap-learn is installed
    seed: int = 0
    threads: Count | None = None        # torch, faiss and BLAS threads: attribute probes, near-copy search (None: 1)
    solver: str = "adamw"               # the attribute probes' optimiser (heads.lbfgs: lbfgs for 100k+ rows)

    def __post_init__(self):
        check_bounds(self)

    def settings(self) -> dict:
        """What determines the audit's results besides the data (recorded; a change reruns it in a study)."""
        from embedkit.attributes import parse

        return {"attributes": [a.name for a in parse(self.attributes)], "n_boot": self.n_boot, "n_perm": self.n_perm,
                "threshold": self.threshold, "projection": self.projection, "solver": self.solver}

    def out_dir(self) -> Path:
        return Where(self.manifest, self.dataset, runs_dir=self.runs_dir).method_dir(self.model, "audit")


def run_audit(cfg: AuditConfig) -> dict:
    """Probe every attribute, test the distributions, list duplicate pairs, draw the map; write and return the summary."""
    from embedkit.audit import distribution, duplicates, maps, probes, search
    from embedkit.cache.join import join
    from embedkit.cache import read_cache
    from embedkit.heads import features
    from embedkit.attributes import parse
    from embedkit.manifest import read_manifest

    manifest = read_manifest(cfg.manifest, attributes=cfg.attributes)
    declared = parse(cfg.attributes)
    path = cfg.cache or features.find_cache(cfg.model, cfg.manifest, cfg.cache_dir)
    view = join(features.of_model(read_cache(path), cfg.model), manifest)   # the store itself is not kept
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    groups = {a.name: probes.attribute_values(view, a) for a in declared}
    with features.torch_threads(cfg.threads), search.search_threads(cfg.threads):
        attr = {a.name: probes.probe_attribute(view, manifest, a, groups[a.name], n_boot=cfg.n_boot, n_perm=cfg.n_perm,
                                               seed=cfg.seed, solver=cfg.solver) for a in declared}
        dup = duplicates.find(view, manifest, threshold=cfg.threshold)
    principal = distribution.principal_scores(view.embeddings)      # the KS tests' components and the map's axes
    ks = distribution.ks_tests(principal, view.meta["label"], groups,
                               {name: list(a.order(groups[name])) for name, a in zip(groups, declared)},
                               patient_id=view.meta["patient_id"])
    geometry = maps.draw(view, groups, out / "map.png", title=cfg.model, projection=cfg.projection,
                         principal=principal[0])
    summary = {"model": cfg.model, "manifest": str(cfg.manifest.resolve()), "manifest_digest": manifest.digest(),
               "cache_key": view.attrs.get("key"), "settings": cfg.settings(),
               "attributes": attr, "distribution": {k: v for k, v in ks.items() if k != "rows"},
               "duplicates": dup.summary(), "map": geometry}
    _write_rows(out / "pairs.csv", dup.pairs, ["kind", "image_a", "image_b", "split_a", "split_b", "patient_a",
                                               "patient_b", "cosine"])
    _write_rows(out / "ks.csv", ks["rows"], ["attribute", "within", "group_a", "group_b", "component", "n_a", "n_b",
                                             "d", "p", "q"])
    tmp = out / "audit.json.partial"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "audit.json")
    return summary


def _write_rows(path: Path, rows: list[dict], cols: list[str]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
