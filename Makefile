# The developer entry point. `make demo` and `make test` do all the set-up on a fresh
# Debian 12 machine (apt packages, build, guest images) and are cheap to repeat.
BUILD ?= build
JOBS ?= $(shell nproc)
VIAL := $(BUILD)/bin/vial
DEMO_CODE := import os, platform, getpass; print(f"Hello from Python {platform.python_version()} in a microVM: kernel {os.uname().release}, user {getpass.getuser()}, 6*7 = {6*7}")

.PHONY: all deps build images demo test unit asan bench clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Every image is checked; only what changed is rebuilt (see images/build-image).
images: build
	@$(VIAL) image build python javascript shell

demo: build
	@$(VIAL) image build python
	@echo '$$ vial run -l python -c ...'
	@$(VIAL) run -l python -c '$(DEMO_CODE)'

# doctor first: it shows the host's state in the log and caches the KVM verdict the tests reuse.
test: images
	-@$(VIAL) doctor
	@ctest --test-dir $(BUILD) --output-on-failure -j 2

unit: build
	@ctest --test-dir $(BUILD) --output-on-failure -L unit

# Debug + AddressSanitizer/UndefinedBehaviorSanitizer build of everything but the guest agent.
asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@ctest --preset asan -L unit

bench: images
	@$(VIAL) bench run --language python --count 10 --json

clean:
	rm -rf $(BUILD) build-asan
