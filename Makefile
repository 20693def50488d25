# Two commands do all the set-up: `make demo` and `make test` (each creates .venv if missing).
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
DATA := data/synthetic
DEMO := runs/demo

.PHONY: venv test demo demo-data demo-p1 demo-p2 bench clean
venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	rm -f .venv/.installed-*
	touch $@

# pytest exits 5 when it ran no test: that is a failure here, not a pass.
test: venv
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no test ran"; exit 1; fi; exit $$rc

# Synthetic data in the official layouts, brief CPU training of both problems (small widths, no
# ImageNet weights), both grading scripts, their scores and every figure, under runs/demo/.
demo: demo-p1 demo-p2
	@echo "== demo done: figures and logs under $(DEMO)/"
	@ls $(DEMO)/p1/*.png $(DEMO)/p2_fcn32s/*.png $(DEMO)/p2_fcn8s/*.png

demo-data: venv
	$(PY) -m datasets.synthetic --out $(DATA)

demo-p1: demo-data
	$(PY) p1_train.py --data-path $(DATA)/p1_data --width 4 --img-size 32 --epochs 30 --batch-size 25 \
		--optimizer adam --lr-schedule none --weight-decay 0 --workers 0 --output-dir $(DEMO)/p1
	P1_CKPT=$(DEMO)/p1/best.pt bash hw2_p1.sh $(DATA)/p1_data/val_50 $(DEMO)/p1/val_pred.csv
	@echo "== P1 accuracy of hw2_p1.sh's CSV on the synthetic val_50"
	$(PY) p1_test.py --score-csv $(DEMO)/p1/val_pred.csv
	$(PY) p1_tsne.py --checkpoint $(DEMO)/p1/best.pt --images $(DATA)/p1_data/val_50 --output-dir $(DEMO)/p1

demo-p2: demo-data
	$(PY) p2_train.py --recipe baseline --data-path $(DATA)/p2_data --width 16 --pretrained none --epochs 12 \
		--lr 1e-3 --batch-size 4 --workers 0 --snapshot-epochs 1,6,12 --output-dir $(DEMO)/p2_fcn32s
	$(PY) p2_train.py --recipe improved --data-path $(DATA)/p2_data --width 16 --pretrained none --epochs 16 \
		--lr 1e-3 --switch-sgd-at 12 --batch-size 4 --workers 0 --snapshot-epochs 1,8,16 \
		--output-dir $(DEMO)/p2_fcn8s
	rm -rf $(DEMO)/p2_pred
	P2_CKPT=$(DEMO)/p2_fcn8s/best.pt bash hw2_p2.sh $(DATA)/p2_data/validation $(DEMO)/p2_pred
	@echo "== P2 mIoU of hw2_p2.sh's masks on the synthetic validation set (FCN8s)"
	$(PY) mean_iou_evaluate.py -g $(DATA)/p2_data/validation -p $(DEMO)/p2_pred

bench: venv
	$(PY) bench.py

clean:
	rm -rf runs data .cache .pytest_cache
