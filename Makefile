# Two commands do all the set-up: `make demo` and `make test` (each creates .venv if missing).
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
OPTIONAL_STAMP := .venv/.optional-$(shell cat requirements-optional.txt constraints.txt | cksum | cut -d' ' -f1)
DATA := data/synthetic
DEMO := runs/demo
SEED ?= 0
# Small CPU settings shared by the P2 demo runs: width-16 networks, no ImageNet weights.
P2_CPU := --data-path $(DATA)/p2_data --width 16 --pretrained none --lr 1e-3 --batch-size 4 --workers 0 \
	--seed $(SEED) --overwrite
# The improved recipe shortened to 16 epochs for the CPU (SGD from epoch 12, not 71).
P2_SHORT := --epochs 16 --snapshot-epochs 1,8,16

.PHONY: venv test demo demo-data demo-p1 demo-p2 demo-report demo-recipes bench clean
venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	rm -f .venv/.installed-*
	touch $@

# The optional packages (requirements-optional.txt: tensorboard) too, so that their tests run.
$(OPTIONAL_STAMP): requirements-optional.txt constraints.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-optional.txt -c constraints.txt
	rm -f .venv/.optional-*
	touch $@

# pytest exits 5 when it ran no test: that is a failure here, not a pass.
test: venv $(OPTIONAL_STAMP)
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no test ran"; exit 1; fi; exit $$rc

# Synthetic data in the official layouts, brief CPU training of both problems, both grading
# scripts, their scores and every figure, under runs/demo/, and the report written from those runs
# (runs/demo/report/report.md). SEED=1 make demo for another seed.
demo: demo-p1 demo-p2
	$(MAKE) --no-print-directory demo-report
	@echo "== demo done (seed $(SEED)): figures and logs under $(DEMO)/, the report in $(DEMO)/report/report.md"
	@ls $(DEMO)/p1/*.png $(DEMO)/p2_fcn32s/*.png $(DEMO)/p2_fcn8s/*.png

# The homework report from the demo's three runs (make demo runs it last; alone it rewrites the report).
demo-report: venv
	$(PY) report.py --p1 $(DEMO)/p1 --baseline $(DEMO)/p2_fcn32s --improved $(DEMO)/p2_fcn8s --output $(DEMO)/report

demo-data: venv
	$(PY) -m datasets.synthetic --out $(DATA)

demo-p1: demo-data
	$(PY) p1_train.py --data-path $(DATA)/p1_data --width 4 --img-size 32 --epochs 30 --batch-size 25 \
		--optimizer adam --lr 1e-3 --lr-schedule none --weight-decay 0 --label-smoothing 0 --no-hflip \
		--crop-padding 0 --color-jitter 0 --workers 0 --seed $(SEED) --overwrite --output-dir $(DEMO)/p1
	P1_CKPT=$(DEMO)/p1/best.pt bash hw2_p1.sh $(DATA)/p1_data/val_50 $(DEMO)/p1/val_pred.csv
	@echo "== P1 accuracy of hw2_p1.sh's CSV on the synthetic val_50"
	$(PY) p1_test.py --score-csv $(DEMO)/p1/val_pred.csv
	$(PY) p1_tsne.py --checkpoint $(DEMO)/p1/best.pt --images $(DATA)/p1_data/val_50 --output-dir $(DEMO)/p1

demo-p2: demo-data
	$(PY) p2_train.py --recipe baseline $(P2_CPU) --epochs 12 --snapshot-epochs 1,6,12 --output-dir $(DEMO)/p2_fcn32s
	$(PY) p2_train.py --recipe improved $(P2_CPU) $(P2_SHORT) --switch-sgd-at 12 --output-dir $(DEMO)/p2_fcn8s
	P2_CKPT=$(DEMO)/p2_fcn8s/best.pt bash hw2_p2.sh $(DATA)/p2_data/validation $(DEMO)/p2_pred
	@echo "== P2 mIoU of hw2_p2.sh's masks on the synthetic validation set (FCN8s)"
	$(PY) mean_iou_evaluate.py -g $(DATA)/p2_data/validation -p $(DEMO)/p2_pred

# The report's ablations and our own recipe (best builds on improved-ours, not on the author's
# improved), each the improved run shortened as in demo-p2 (Adam
# only for improved-adam), on the same synthetic data and seed; prints the best validation mIoU of
# each (about 5 minutes on 2 cores).
demo-recipes: demo-data
	for r in improved improved-ce improved-adam best; do \
		if [ $$r = improved-adam ]; then switch=0; else switch=12; fi; \
		$(PY) p2_train.py --recipe $$r $(P2_CPU) $(P2_SHORT) --switch-sgd-at $$switch \
			--output-dir $(DEMO)/recipes/$$r || exit 1; done
	@for r in improved improved-ce improved-adam best; do \
		$(PY) -c "import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); \
		print(f'== {sys.argv[2]:14s} best val mIoU {max(float(r[\"val_miou\"]) for r in rows):.4f}')" \
		$(DEMO)/recipes/$$r/log.csv $$r; done

bench: venv
	$(PY) bench.py

clean:
	rm -rf runs data .cache .pytest_cache
