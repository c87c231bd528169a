// The flags of the `qtrain` command-line client (defined in flags.cc; `qtrain help` lists them).
#pragma once

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, token);
ABSL_DECLARE_FLAG(std::string, tenant);
ABSL_DECLARE_FLAG(std::string, weights);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, qtypes);
ABSL_DECLARE_FLAG(double, max_accuracy_drop);
ABSL_DECLARE_FLAG(double, max_loss_increase);
ABSL_DECLARE_FLAG(std::string, rules_out);
ABSL_DECLARE_FLAG(bool, skip_all_but_one);
ABSL_DECLARE_FLAG(std::string, map);
ABSL_DECLARE_FLAG(std::string, role);
ABSL_DECLARE_FLAG(std::string, name);
ABSL_DECLARE_FLAG(bool, json);
// session create
ABSL_DECLARE_FLAG(std::string, preset);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, rules);
ABSL_DECLARE_FLAG(std::string, optimizer);
ABSL_DECLARE_FLAG(double, lr);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int, classes);
// data
ABSL_DECLARE_FLAG(std::string, data);
ABSL_DECLARE_FLAG(std::string, format);
ABSL_DECLARE_FLAG(std::string, split);
ABSL_DECLARE_FLAG(std::string, labels);
ABSL_DECLARE_FLAG(std::string, label_column);
ABSL_DECLARE_FLAG(std::string, targets);
ABSL_DECLARE_FLAG(std::string, input_shape);
ABSL_DECLARE_FLAG(float, input_scale);
ABSL_DECLARE_FLAG(int64_t, seq_len);
ABSL_DECLARE_FLAG(int64_t, limit);
// streams
ABSL_DECLARE_FLAG(int64_t, batch_size);
ABSL_DECLARE_FLAG(int, epochs);
ABSL_DECLARE_FLAG(int64_t, steps);
ABSL_DECLARE_FLAG(bool, shuffle);
ABSL_DECLARE_FLAG(bool, update_stats);
ABSL_DECLARE_FLAG(std::string, progress);
ABSL_DECLARE_FLAG(int64_t, log_every);
// health
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(double, timeout);
// info
ABSL_DECLARE_FLAG(bool, verbose);
