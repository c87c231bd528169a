#include <gtest/gtest.h>
#include "kernels/qdot.h"
TEST(Smoke, Builds) { EXPECT_TRUE(true); }
