// qtrain-conformance FILE.json [--backend=onednn|reference]
// qtrain-conformance --list-isas: the ISA levels this CPU runs above baseline, lowest first, one a
// line (the values QTRAIN_MAX_ISA takes for per-ISA runs).
// Runs every case of a golden-format file and prints one line per case, then
// "N passed, N failed". The first lines name the CPU, the active ISA (QTRAIN_MAX_ISA caps it) and
// the int8 kernel that runs. Exit status: 0 all passed, 1 some failed, 2 usage or file error.
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/backend/backend.h"
#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"
#include "tools/conformance/golden_runner.h"

int main(int argc, char** argv) {
  std::string path;
  std::string backend_name = "onednn";
  if (argc == 2 && std::strcmp(argv[1], "--list-isas") == 0) {
    for (qtrain::Isa isa : qtrain::RunnableIsas()) std::printf("%s\n", qtrain::IsaName(isa));
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--backend=", 10) == 0) {
      backend_name = argv[i] + 10;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      path.clear();
      break;
    } else if (path.empty()) {
      path = argv[i];
    } else {
      path.clear();
      break;
    }
  }
  if (path.empty() || (backend_name != "onednn" && backend_name != "reference")) {
    std::fprintf(stderr,
                 "usage: qtrain-conformance FILE.json [--backend=onednn|reference]\n"
                 "       qtrain-conformance --list-isas\n"
                 "Checks qtrain's kernels against golden vectors (format qtrain-golden-v1).\n");
    return 2;
  }
  if (auto s = qtrain::ValidateIsaEnvironment(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  std::printf("cpu: %s\n", qtrain::CpuSummary().c_str());
  std::unique_ptr<qtrain::Backend> backend;
  if (backend_name == "reference") {
    std::printf("int8 kernel: reference (--backend=reference)\n");
    backend = qtrain::MakeReferenceBackend();
  } else {
    auto made = qtrain::MakeOnednnBackend();
    if (!made.ok()) {
      std::fprintf(stderr, "error: %s\n", made.status().ToString().c_str());
      return 2;
    }
    backend = std::move(*made);
    auto kernels = qtrain::DescribeInt8Kernels();
    if (!kernels.ok()) {
      std::fprintf(stderr, "error: %s\n", kernels.status().ToString().c_str());
      return 2;
    }
    std::printf("int8 kernel: %s\n", kernels->front().chosen.c_str());
  }
  auto results = qtrain::conformance::RunGoldenFile(path, *backend);
  if (!results.ok()) {
    std::fprintf(stderr, "error: %s\n", results.status().ToString().c_str());
    return 2;
  }
  int passed = 0, failed = 0;
  for (const auto& r : *results) {
    std::printf("%-4s %-40s %-8s max_abs_err=%.3g max_rel_err=%.3g%s%s\n",
                r.passed ? "PASS" : "FAIL", r.name.c_str(), r.op.c_str(), r.max_abs_err,
                r.max_rel_err, r.message.empty() ? "" : "  ", r.message.c_str());
    (r.passed ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
