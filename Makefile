# Two commands do all the set-up: `make demo` and `make test` (each creates .venv if missing).
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
DATA := data/synthetic
DEMO := runs/demo

.PHONY: venv test demo bench clean
venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	rm -f .venv/.installed-*
	touch $@

# pytest exits 5 when it ran no test: that is a failure here, not a pass.
test: venv
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no test ran"; exit 1; fi; exit $$rc

demo: venv
	$(PY) -m datasets.synthetic --out $(DATA)
	@echo "== P2 grader on a copy of the ground truth (must print mean_iou: 1.000000)"
	$(PY) mean_iou_evaluate.py -g $(DATA)/p2_data/validation -p $(DATA)/p2_data/validation

bench: venv
	$(PY) bench.py

clean:
	rm -rf runs data .pytest_cache
