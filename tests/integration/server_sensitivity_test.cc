// AnalyzeSensitivity on the real server: the report's metrics equal what Evaluate gives for the
// same rules, the mixed-precision rules it returns do what it says when applied, the session is
// left byte for byte as it was, bad requests fail naming the field, and a cancelled analysis
// stops while a Train stream on the same session runs beside it.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/server_fixture.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

constexpr int kHeldOut = 4;  // batches of 32

class ServerSensitivityTest : public ServerTest {
 protected:
  struct Result {
    std::vector<v1::SensitivityResponse> messages;
    grpc::Status status;
  };

  Result Analyze(const std::string& id, const v1::SensitivityOptions* options, int batches,
                 const std::function<void(v1::SensitivityRequest&, int)>& edit = nullptr) {
    grpc::ClientContext ctx;
    auto stream = stub_->AnalyzeSensitivity(&ctx);
    for (int i = 0; i < batches; ++i) {
      v1::SensitivityRequest req;
      if (i == 0) {
        req.set_session_id(id);
        if (options != nullptr) *req.mutable_options() = *options;
      }
      *req.mutable_batch() = MakeBatch(1000 + i);
      if (edit) edit(req, i);
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
    Result r;
    v1::SensitivityResponse resp;
    while (stream->Read(&resp)) r.messages.push_back(resp);
    r.status = stream->Finish();
    return r;
  }

  v1::EvaluateResponse Evaluate(const std::string& id) {
    grpc::ClientContext ctx;
    v1::EvaluateResponse resp;
    auto writer = stub_->Evaluate(&ctx, &resp);
    for (int i = 0; i < kHeldOut; ++i) {
      v1::EvaluateRequest req;
      req.set_session_id(id);
      *req.mutable_batch() = MakeBatch(1000 + i);
      writer->Write(req);
    }
    writer->WritesDone();
    EXPECT_TRUE(writer->Finish().ok());
    return resp;
  }

  grpc::Status SetRules(const std::string& id, const v1::RuleSet& rules) {
    grpc::ClientContext ctx;
    v1::UpdateRulesRequest req;
    req.set_session_id(id);
    *req.mutable_rules() = rules;
    v1::Session resp;
    return stub_->UpdateRules(&ctx, req, &resp);
  }

  std::string Checkpoint(const std::string& id) {
    grpc::ClientContext ctx;
    v1::DownloadCheckpointRequest req;
    req.set_session_id(id);
    auto reader = stub_->DownloadCheckpoint(&ctx, req);
    std::string bytes;
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    EXPECT_TRUE(reader->Finish().ok());
    return bytes;
  }
};

void ExpectMetrics(const v1::SensitivityMetrics& m, const v1::EvaluateResponse& e,
                   const std::string& what) {
  EXPECT_DOUBLE_EQ(m.loss(), e.loss()) << what;
  EXPECT_DOUBLE_EQ(m.accuracy(), e.accuracy()) << what;
  EXPECT_EQ(m.examples(), e.examples()) << what;
}

TEST_F(ServerSensitivityTest, ReportMatchesEvaluateAndTheSessionIsUnchanged) {
  Create("s", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})");
  ASSERT_TRUE(Train("s", 30).second.ok());
  const std::string before = Checkpoint("s");

  v1::SensitivityOptions options;
  *options.mutable_rules() = Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8"}]})");
  options.add_qtypes("int2");
  options.add_qtypes("int8");
  options.set_max_accuracy_drop(0.01);
  Result r = Analyze("s", &options, kHeldOut);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  // One message per batch received, one per evaluation, the report last.
  ASSERT_GT(r.messages.size(), static_cast<size_t>(kHeldOut + 1));
  EXPECT_EQ(r.messages[0].evaluated(), "received held-out batch 0 (32 examples)");
  int last = 0;
  for (size_t i = kHeldOut; i + 1 < r.messages.size(); ++i) {
    const v1::SensitivityResponse& m = r.messages[i];
    EXPECT_EQ(m.evaluations(), last + 1) << m.evaluated();
    EXPECT_LE(m.evaluations(), m.planned());
    EXPECT_EQ(m.metrics().examples(), 32 * kHeldOut);
    last = m.evaluations();
  }
  EXPECT_EQ(r.messages[kHeldOut].evaluated(), "float");
  ASSERT_TRUE(r.messages.back().has_report());
  const v1::SensitivityReport& report = r.messages.back().report();
  EXPECT_EQ(report.ops_size(), 2);
  for (const v1::OpSensitivity& op : report.ops()) {
    EXPECT_EQ(op.qtype(), "int2");
    EXPECT_TRUE(op.has_only_this() && op.has_all_but_this());
  }
  EXPECT_EQ(Checkpoint("s"), before) << "the analysis changed the session";

  // The float model and the int2 model as Evaluate sees them.
  ASSERT_TRUE(SetRules("s", v1::RuleSet()).ok());
  ExpectMetrics(report.float_model(), Evaluate("s"), "float");
  ASSERT_TRUE(SetRules("s", Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int2",
      "act_qtype": "int2"}]})"))
                  .ok());
  ExpectMetrics(report.quantized(), Evaluate("s"), "quantized");
  // The mixed-precision rules do what the report says.
  ASSERT_TRUE(report.has_mixed_precision());
  const v1::MixedPrecision& mp = report.mixed_precision();
  EXPECT_TRUE(mp.within_budget());
  // int2 everywhere misses the budget, so the search had to raise something.
  EXPECT_LT(report.quantized().accuracy(), report.float_model().accuracy() - 0.01);
  EXPECT_GE(mp.metrics().accuracy(), report.float_model().accuracy() - 0.01 - 1e-12);
  ASSERT_TRUE(SetRules("s", mp.rules()).ok());
  ExpectMetrics(mp.metrics(), Evaluate("s"), "mixed precision");
  EXPECT_EQ(mp.choices_size(), 2);
}

// Static rules without statistics are measured with dynamic scales (Qwix's fallback) and say so.
TEST_F(ServerSensitivityTest, UncalibratedStaticScalesAreFlagged) {
  Create("u", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
      "act_static_scale": true}]})");
  v1::SensitivityOptions options;
  options.set_skip_all_but_one(true);
  Result before = Analyze("u", &options, 1);
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  for (const v1::OpSensitivity& op : before.messages.back().report().ops()) {
    EXPECT_TRUE(op.uncalibrated()) << op.module_path();
  }
  ASSERT_TRUE(Train("u", 5).second.ok());  // training collects the statistics
  Result after = Analyze("u", &options, 1);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  for (const v1::OpSensitivity& op : after.messages.back().report().ops()) {
    EXPECT_FALSE(op.uncalibrated()) << op.module_path();
  }
  // Entropy rules read a histogram the absmax statistics are not.
  *options.mutable_rules() = Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8", "act_static_scale": true, "act_calibration_method": "entropy"}]})");
  Result entropy = Analyze("u", &options, 1);
  ASSERT_TRUE(entropy.status.ok()) << entropy.status.error_message();
  EXPECT_TRUE(entropy.messages.back().report().ops(0).uncalibrated());
}

TEST_F(ServerSensitivityTest, DefaultsToTheSessionsRules) {
  Create("d", R"({"rules": [{"module_path": "Dense_1", "weight_qtype": "int4"}]})");
  ASSERT_TRUE(Train("d", 10).second.ok());
  Result r = Analyze("d", nullptr, 2);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const v1::SensitivityReport& report = r.messages.back().report();
  ASSERT_EQ(report.ops_size(), 1);
  EXPECT_EQ(report.ops(0).module_path(), "Dense_1");
  EXPECT_EQ(report.ops(0).qtype(), "int4");
  EXPECT_FALSE(report.has_mixed_precision());
  // Float rules quantize nothing: nothing to analyse.
  Create("f");
  Result none = Analyze("f", nullptr, 1);
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(none.status.error_message(), HasSubstr("quantize no op"));
}

TEST_F(ServerSensitivityTest, BadRequestsNameTheField) {
  Create("b");
  v1::SensitivityOptions options;
  options.add_qtypes("int9");
  options.set_max_loss_increase(0.1);
  Result r = Analyze("b", &options, 1);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("options.qtypes[0]"));

  options.clear_qtypes();
  options.set_max_loss_increase(-1);
  r = Analyze("b", &options, 1);
  EXPECT_THAT(r.status.error_message(), HasSubstr("max_loss_increase"));

  // Options after the first message.
  v1::SensitivityOptions good;
  *good.mutable_rules() = Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8"}]})");
  r = Analyze("b", nullptr, 2, [&](v1::SensitivityRequest& req, int i) {
    if (i == 1) *req.mutable_options() = good;
  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("only the first message"));
  // Also after a first message that holds only the session id (issue 20).
  r = Analyze("b", nullptr, 2, [&](v1::SensitivityRequest& req, int i) {
    if (i == 0) req.clear_batch();
    if (i == 1) *req.mutable_options() = good;
  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(),
              HasSubstr("only the first message may set them (message 2"));

  // A rank-0 batch (a scalar), then one of the wrong shape, each named by its index.
  r = Analyze("b", &good, 1, [&](v1::SensitivityRequest& req, int) {
    *req.mutable_batch()->mutable_inputs() = rpc::ToWire(Tensor::FromFloats({}, {1.0f}));
  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("held-out batch 0"));
  // Candidates out of order, and an accuracy budget for a loss without accuracy.
  v1::SensitivityOptions backwards = good;
  backwards.add_qtypes("int8");
  backwards.add_qtypes("int4");
  backwards.set_max_loss_increase(0.1);
  r = Analyze("b", &backwards, 1);
  EXPECT_THAT(r.status.error_message(), HasSubstr("qtypes[1]: \"int4\" is not wider"));
  r = Analyze("b", &good, 2, [&](v1::SensitivityRequest& req, int i) {
    if (i == 1)
      *req.mutable_batch()->mutable_inputs() = rpc::ToWire(Tensor::Zeros(DType::kF32, {2, 5}));
  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("held-out batch 1"));

  // No batches; an unknown session.
  r = Analyze("b", &good, 1, [](v1::SensitivityRequest& req, int) { req.clear_batch(); });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("no held-out batches"));
  r = Analyze("nope", &good, 1);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerSensitivityTest, CancelStopsTheAnalysisBetweenEvaluations) {
  Create("c", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})");
  const std::string before = Checkpoint("c");
  grpc::ClientContext ctx;
  auto stream = stub_->AnalyzeSensitivity(&ctx);
  for (int i = 0; i < 16; ++i) {
    v1::SensitivityRequest req;
    if (i == 0) req.set_session_id("c");
    *req.mutable_batch() = MakeBatch(i, 256);
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  v1::SensitivityResponse resp;
  int read = 0;
  while (stream->Read(&resp)) {
    if (resp.evaluations() >= 1) {
      ctx.TryCancel();
      break;
    }
    ++read;
  }
  EXPECT_EQ(read, 16);
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(Checkpoint("c"), before);
  // The session still trains and analyses afterwards.
  EXPECT_TRUE(Train("c", 3).second.ok());
  EXPECT_TRUE(Analyze("c", nullptr, 1).status.ok());
}

// Other calls run between the evaluations; one that moves the weights fails the analysis
// instead of mixing two models in one report.
TEST_F(ServerSensitivityTest, TrainingBetweenEvaluationsFailsTheAnalysis) {
  Create("m", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})");
  grpc::ClientContext ctx;
  auto stream = stub_->AnalyzeSensitivity(&ctx);
  for (int i = 0; i < 100; ++i) {  // evaluations long enough for a step to queue between them
    v1::SensitivityRequest req;
    if (i == 0) req.set_session_id("m");
    *req.mutable_batch() = MakeBatch(i, 256);
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  v1::SensitivityResponse resp;
  bool trained = false;
  while (stream->Read(&resp)) {
    if (resp.evaluations() == 1 && !trained) {
      trained = true;
      auto [steps, status] = Train("m", 1);
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
  }
  ASSERT_TRUE(trained);
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("changed during the analysis"));
}

}  // namespace
}  // namespace qtrain
