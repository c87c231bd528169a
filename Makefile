# qtrain: one entry point. Every target installs missing Debian packages first
# (scripts/install_deps.sh, idempotent). Binaries land in build/bin/, tests in build/tests/.
#
#   make demo     the main job: qtrain-server + the quantized-training tour (scripts/demo.sh)
#   make build    Release build (portable x86-64; hot loops dispatch to AVX-512 at run time)
#   make test     build + every test (ctest prints the counts)
#   make asan     ASan+UBSan build of the unit tests and the in-process server test (CI too)
#   make tsan     clang + ThreadSanitizer build of the threaded code's tests (sessions, streams,
#                 the in-process server; CI too)
#   make fuzz     clang + libFuzzer + ASan/UBSan build of tests/fuzz, each target run for
#                 FUZZ_SECONDS (default 60) from its seed corpus (CI too)
#   make bench    benchmarks + ratio tables, then one table per lower ISA level under
#                 QTRAIN_MAX_ISA (numbers recorded in docs/PERFORMANCE.md)
#   make format   clang-format in place;  make format-check  fails on unformatted files
#   make tidy     clang-tidy over the sources (uses build/compile_commands.json)
#   make docker-verify  build the Docker image and check it end to end (root; no registry needed)
#   make install  build, then install into $(PREFIX) (default /usr/local): binaries, the C++ client
#                 library with its CMake package, the .proto files, the Python package

BUILD_DIR ?= build
ASAN_DIR  ?= build-asan
FUZZ_DIR  ?= build-fuzz
TSAN_DIR  ?= build-tsan
FUZZ_SECONDS ?= 60
JOBS      ?= $(shell nproc)
PREFIX    ?= /usr/local
CMAKE_FLAGS ?=
SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null)

.PHONY: all deps build test asan tsan fuzz bench demo format format-check tidy clean docker-verify install

all: build

deps:
	@bash scripts/install_deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD_DIR)

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

asan: deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
	  -DQTRAIN_SANITIZE_ADDRESS=ON -DQTRAIN_SANITIZE_UNDEFINED=ON -DQTRAIN_BUILD_BENCHMARKS=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -L 'unit|asan' -j $(JOBS)

# OMP_NUM_THREADS=1: OpenMP's runtime is not instrumented, so kernels run on the calling thread
# (the executors); the threads under test are qtrain's own. Suppressions: tests/tsan.supp.
tsan:
	@bash scripts/install_deps.sh --fuzz
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DQTRAIN_SANITIZE_THREAD=ON -DQTRAIN_BUILD_BENCHMARKS=OFF \
	  -DQTRAIN_BUILD_PYTHON=OFF
	cmake --build $(TSAN_DIR) -j $(JOBS) --target tsan_tests
	cd $(TSAN_DIR) && OMP_NUM_THREADS=1 \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -L tsan -LE isa -j $(JOBS)

fuzz:
	@bash scripts/install_deps.sh --fuzz
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQTRAIN_BUILD_FUZZERS=ON -DQTRAIN_SANITIZE_ADDRESS=ON -DQTRAIN_SANITIZE_UNDEFINED=ON \
	  -DBUILD_TESTING=OFF -DQTRAIN_BUILD_BENCHMARKS=OFF -DQTRAIN_BUILD_PYTHON=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzzers
	bash scripts/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

bench: build
	@bash scripts/install_deps.sh --bench
	@mkdir -p $(BUILD_DIR)/bench
	$(BUILD_DIR)/bin/qtrain-bench-qdot --benchmark_min_time=0.3 --benchmark_repetitions=3 \
	  --benchmark_report_aggregates_only=true \
	  --benchmark_out=$(BUILD_DIR)/bench/qdot.json --benchmark_out_format=json
	/usr/bin/python3 scripts/bench_report.py $(BUILD_DIR)/bench/qdot.json
	bash scripts/bench_train.sh $(BUILD_DIR)
	bash scripts/bench_lm.sh $(BUILD_DIR)
	bash scripts/bench_dp.sh $(BUILD_DIR)
	bash scripts/bench_transport.sh $(BUILD_DIR)
	bash scripts/bench_isa.sh $(BUILD_DIR)

format: deps
	clang-format -i $(SOURCES)

format-check: deps
	clang-format --dry-run -Werror $(SOURCES)

tidy: build
	clang-tidy -p $(BUILD_DIR) --quiet $(filter %.cc,$(SOURCES))

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR) $(TSAN_DIR)

docker-verify:
	bash scripts/docker_verify.sh
