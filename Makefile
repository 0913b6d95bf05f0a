# lorac — build, test, sanitize, fuzz.
#   make            build/lorac (and the bench drivers build/bench_*)
#   make test       install missing Debian packages (scripts/deps.sh), build, run every test
#   make asan       the tests under AddressSanitizer + UBSan (build-asan/)
#   make fuzz       every libFuzzer target for FUZZ_SECONDS each (default 300)
#   make demo       the main job on the embedded default (see README)

CC       ?= cc
BUILD    ?= build
OPT      ?= -O2 -g
SAN      ?=
CPPFLAGS := -Isrc -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
CFLAGS   := -std=c11 -Wall -Wextra -fopenmp -MMD -MP $(OPT) $(SAN)
LDLIBS   := -lcjson -lyaml -lpcre2-8 -lutf8proc -lopenblas -lcurl -lm -lpthread

LIB_SRC  := $(shell find src -name '*.c' ! -name main.c ! -path 'src/backend/cuda/*' | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)

# The CUDA backend (src/backend/cuda/*.cu) is built when nvcc is found (make NVCC= turns
# it off): machine code for Ampere (sm_80, sm_86), Ada (sm_89) and Hopper (sm_90), plus
# sm_90 PTX for newer cards. Without nvcc the build is the CPU-only one.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifneq ($(strip $(NVCC)),)
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(realpath $(NVCC))))
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_86,code=sm_86 \
             -gencode=arch=compute_89,code=sm_89 -gencode=arch=compute_90,code=[sm_90,compute_90]
NVOPT    := -O3 -std=c++17 -Xcompiler -Wall,-Wextra -MMD -MP
NVFLAGS  := $(NVOPT) $(CUDA_ARCH)
# qgemm.cu's tensor-core product needs Hopper's arch-specific instructions: its sm_90 code
# is built as sm_90a (plus sm_90 PTX, in which the kernel is empty: newer cards use the
# copy path); the other architectures as they are.
comma    := ,
QG_ARCH  := $(foreach g,$(CUDA_ARCH),$(if $(findstring compute_90,$(g)),-gencode=arch=compute_90a$(comma)code=sm_90a -gencode=arch=compute_90$(comma)code=compute_90,$(g)))
CU_SRC   := $(shell find src/backend/cuda -name '*.cu' | sort)
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.o)
CUDA_DEF := -DLC_HAVE_CUDA
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
endif
TEST_SRC := $(shell find tests -name 'test_*.c' | sort)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/%)
FUZZ_SRC := $(shell find fuzz -name 'fuzz_*.c' | sort)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build-fuzz/bin/%)
FUZZ_SECONDS ?= 300

.PHONY: all deps test asan fuzz fuzz-build demo clean
all: deps $(BUILD)/lorac $(BENCH_BIN)

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CUDA_DEF) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(CPPFLAGS) $(NVFLAGS) -c $< -o $@

$(BUILD)/src/backend/cuda/qgemm.o: src/backend/cuda/qgemm.cu
	@mkdir -p $(@D)
	$(NVCC) $(CPPFLAGS) $(NVOPT) $(QG_ARCH) -c $< -o $@

$(BUILD)/liblorac.a: $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lorac: $(BUILD)/src/main.o $(BUILD)/liblorac.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Benchmark drivers (bench/*.c), each one program over the library.
$(BUILD)/%: bench/%.c $(BUILD)/liblorac.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/liblorac.a -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/liblorac.a tests/harness.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) $< $(BUILD)/liblorac.a -o $@ $(LDLIBS)

test: deps $(BUILD)/lorac $(BENCH_BIN) $(TEST_BIN) fuzz-build
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-5} tests/run.sh $(BUILD)

asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

# libFuzzer targets: clang builds the library again with coverage instrumentation.
build-fuzz/%.o: %.c
	@mkdir -p $(@D)
	clang $(CPPFLAGS) -std=c11 -g -O1 -MMD -MP -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build-fuzz/liblorac.a: $(LIB_SRC:%.c=build-fuzz/%.o)
	@rm -f $@
	ar rcs $@ $^

build-fuzz/bin/%: fuzz/%.c build-fuzz/liblorac.a
	@mkdir -p $(@D)
	clang $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $^ -o $@ $(LDLIBS)

fuzz-build: deps $(FUZZ_BIN)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# The main job on the embedded default: make the demo model, prepare the project's
# RISC-V data, fine-tune it for a couple of minutes, show losses and answers before and
# after (scripts/demo.sh).
demo: all
	scripts/demo.sh $(BUILD)/lorac

clean:
	rm -rf build build-asan build-fuzz demo

.SECONDARY:

-include $(LIB_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(BUILD)/src/main.d $(LIB_SRC:%.c=build-fuzz/%.d) $(TEST_BIN:=.d) $(BENCH_BIN:=.d)
