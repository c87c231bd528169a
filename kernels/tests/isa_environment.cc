// Linked into every PER_ISA test binary (cmake/QtrainHelpers.cmake): under QTRAIN_MAX_ISA the
// binary fails unless the process really runs at that level, so a per-ISA run cannot quietly
// test the machine's own path instead; it also prints the level and the int8 kernels chosen.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"

namespace qtrain {
namespace {

class IsaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    std::printf("qtrain ISA: %s\n", CpuSummary().c_str());
    const char* env = std::getenv("QTRAIN_MAX_ISA");
    if (env != nullptr && *env != '\0') {
      ASSERT_EQ(std::string(env), IsaName(ActiveIsa()))
          << "QTRAIN_MAX_ISA asks for a level this CPU does not run: " << CpuSummary();
    }
    auto reports = DescribeInt8Kernels();
    ASSERT_TRUE(reports.ok()) << reports.status();
    for (const Int8KernelReport& r : *reports) {
      std::printf("qtrain int8 kernel: %-32s -> %s\n", r.op.c_str(), r.chosen.c_str());
    }
  }
};

const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(new IsaEnvironment);

}  // namespace
}  // namespace qtrain
