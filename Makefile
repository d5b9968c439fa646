# embedkit: `make demo` and `make test` work from a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.embedkit-installed
# Small work (probes, metrics) runs fastest on one thread on these machines (docs/benchmarks.md).
export OMP_NUM_THREADS ?= 1

.PHONY: setup test test-slow demo bench bench-gpu paper report-check clean

setup: $(STAMP)

# torch/torchvision first, pinned: an unpinned requirement pulls a multi-GB build or a
# torchvision that does not import beside the local torch wheel.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# only for its shipped metadata files (NIH v2020, PadChest, CheXpert), which slow tests build manifests from
	$(PY) -m pip install -q -c constraints.txt --no-deps torchxrayvision
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(VENV)/bin/embedkit study --config studies/demo.toml
	$(VENV)/bin/embedkit study --config studies/demo-cv.toml
	$(VENV)/bin/embedkit study --config studies/demo-multilabel.toml
	$(VENV)/bin/embedkit study --config studies/demo-binary.toml
	@echo "demo report: demo/report/report.html (Markdown: demo/report/report.md)"
	@echo "cross-validated demo report: demo/report-cv/report.html"
	@echo "multi-label demo report (underdiagnosis): demo/report-multilabel/report.html"
	@echo "binary demo report (interventions on one finding): demo/report-binary/report.html"

REPORT ?= demo/report/report.html
REPORTS ?= $(REPORT) $(wildcard demo/report-cv/report.html demo/report-multilabel/report.html \
	demo/report-binary/report.html)
CHROMIUM = --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
	--disable-component-update --disable-sync --user-data-dir=$$(mktemp -d)
# Every figure present, drawn and fitting its box (python -m embedkit.report.check); with headless Chromium also
# each report rendered whole at 1,280 px (page-1280.png beside it) and the main one printed to PDF (and to PNG
# pages where poppler's pdftoppm is installed) for a look.
report-check: setup
	@test -f $(REPORT) || (echo "no $(REPORT): run make demo first" && exit 2)
	@for r in $(REPORTS); do $(PY) -m embedkit.report.check $$r || exit 1; done
	@if command -v chromium >/dev/null 2>&1; then \
	  for r in $(REPORTS); do chromium $(CHROMIUM) --window-size=1280,16000 --hide-scrollbars \
	    --screenshot=$$(dirname $$r)/page-1280.png file://$$(realpath $$r) 2>/dev/null \
	    && echo "rendered the whole page 1,280 px wide: $$(dirname $$r)/page-1280.png (the first 16,000 px)"; done; \
	  chromium $(CHROMIUM) --window-size=1280,1000 \
	    --no-pdf-header-footer --print-to-pdf=$(dir $(REPORT))report.pdf file://$(abspath $(REPORT)) 2>/dev/null \
	  && echo "printed the whole page: $(dir $(REPORT))report.pdf" \
	  && if command -v pdftoppm >/dev/null 2>&1; then pdftoppm -png -r 72 $(dir $(REPORT))report.pdf \
	       $(dir $(REPORT))report-page && echo "pages: $(dir $(REPORT))report-page-*.png"; fi; \
	else echo "whole-page rendering skipped: no chromium here (apt-get install chromium)"; fi

bench: setup
	$(PY) benchmarks/run_all.py --out docs/benchmarks.md

# On a machine with a GPU: single-GPU extraction throughput and the NIH estimate (about 3 min).
bench-gpu: setup
	$(PY) benchmarks/bench_gpu.py --device cuda --out docs/benchmarks-gpu.md

STUDY        ?= studies/paper.toml
NIH_METADATA ?=
NIH_IMAGES   ?=
WEIGHTS      ?=
paper: setup
	@test -n "$(NIH_METADATA)" -a -n "$(NIH_IMAGES)" -a -n "$(WEIGHTS)" || \
	  (echo "usage: make paper NIH_METADATA=Data_Entry_2017_v2020.csv NIH_IMAGES=images/ WEIGHTS=weights/" && exit 2)
	$(VENV)/bin/embedkit study --config $(STUDY) --set vars.metadata=$(abspath $(NIH_METADATA)) \
	  --set vars.images=$(abspath $(NIH_IMAGES)) --set vars.weights=$(abspath $(WEIGHTS))
	@echo "paper report: under reports/ (see report_dir in $(STUDY))"

clean:
	rm -rf demo cache runs reports .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
