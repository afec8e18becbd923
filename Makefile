# One entry point per job. Every target creates the environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo serve protos eval bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,train,dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	bash scripts/demo.sh

serve: $(STAMP)
	$(VENV)/bin/ferserver

protos: $(STAMP)
	$(PY) protos/generate.py

# The classifier trained on uncompressed faces only: the "clean" column of every result (models/weights/clean-classifier).
CLEAN_CLF := models/weights/clean-classifier/best.pt
eval: $(STAMP)
	$(VENV)/bin/fereval --out docs/results --update-card --extra-classifier clean=$(CLEAN_CLF)
	$(VENV)/bin/fereval --robustness --out docs/robustness --extra-classifier clean=$(CLEAN_CLF)

bench: $(STAMP)
	$(PY) scripts/bench.py
	$(PY) scripts/video_bench.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Build the server and client images on a local Debian base and run them end to end (tests/docker/test_images.py).
# As root it installs docker.io/debootstrap and starts dockerd when needed; skips with the reason where it cannot.
.PHONY: test-docker
test-docker: $(STAMP)
	FERCODEC_DOCKER_TESTS=1 $(PY) -m pytest -q -s -rs tests/docker
