"""A multi-label probe and its metrics at the scale of a whole dataset: 100,000 cached rows (512-d, 14 findings,
5 % of labels masked), three attributes (sex, age band, site), ~1.5 images per patient, split 70/10/20 by
patient. Each stage runs in one child process on one thread, reporting its time and the child's peak RSS."""

from __future__ import annotations

from common import child

SETUP = """
import time, numpy as np, torch
torch.set_num_threads(1)
rng = np.random.default_rng(0)
N, D, F = {n}, 512, 14
patient = (np.arange(N) / 1.5).astype(int)
P = patient.max() + 1
split_of = np.array(["train", "val", "test"])[np.digitize(rng.random(P), [0.7, 0.8])][patient]
truth = (rng.random((N, F)) < np.linspace(0.03, 0.3, F)).astype(np.float32)
x = (truth @ rng.normal(size=(F, D)).astype(np.float32) + rng.normal(size=(N, D)).astype(np.float32))
truth[rng.random((N, F)) < 0.05] = np.nan
groups = {{"sex": rng.choice(["M", "F"], N), "age": rng.choice(["young", "old"], N), "site": rng.choice(list("ABC"), N)}}
from embedkit.heads.features import Split
parts = {{s: Split(torch.from_numpy(x[split_of == s]), torch.from_numpy(truth[split_of == s]), np.flatnonzero(split_of == s))
         for s in ("train", "val", "test")}}
"""

PROBE = SETUP + """
from embedkit.heads.trained import HeadConfig, train_heads
t = time.perf_counter()
[head] = train_heads(parts["train"], parts["val"], HeadConfig(kind="{kind}", epochs={epochs}, batch_size=512), [0], F)
seconds = time.perf_counter() - t
val = head.predict_proba(parts["val"].x).numpy()
RESULT = {{"seconds": seconds, "rows": int((split_of == "train").sum()), "epochs": {epochs}}}
"""

METRICS = SETUP + """
from embedkit.metrics.findings import evaluate_findings
from embedkit.metrics.ranking import choose_threshold
test = split_of == "test"
prob = 1 / (1 + np.exp(-(3 * np.nan_to_num(truth) - 1.5 + rng.normal(size=truth.shape))))
thresholds = [choose_threshold(truth[split_of == "val", f], prob[split_of == "val", f], "f1") for f in range(F)]
t = time.perf_counter()
evaluate_findings(truth[test], prob[test], findings=tuple(f"f{{i}}" for i in range(F)), thresholds=thresholds,
                  groups={{k: v[test] for k, v in groups.items()}}, patient_id=patient[test], n_boot={b}, n_perm={b})
RESULT = {{"seconds": time.perf_counter() - t, "rows": int(test.sum()), "patients": int(len(set(patient[test])))}}
"""


def probe(n: int = 100_000, kind: str = "linear", epochs: int = 10) -> dict:
    return child(PROBE.format(n=n, kind=kind, epochs=epochs))


def metrics(n: int = 100_000, n_boot: int = 1000) -> dict:
    return child(METRICS.format(n=n, b=n_boot))
